-- cmis.upsert_platform_connection as a user calls it: the reconnect story
-- (create -> disconnect -> reconnect restores the same row), updates of a
-- live row, NULL arguments, updated_at, named parameters and the row it
-- returns.
--
-- Run by hand:  psql -X -v ON_ERROR_STOP=1 -d cmis -f tests/sql/10_upsert.sql
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(43);

SELECT gen_random_uuid() AS org \gset
INSERT INTO cmis.orgs (org_id, name) VALUES (:'org', 'pgTAP upsert org');

---------------------------------------------------------------------------
-- The reconnect story.
---------------------------------------------------------------------------
-- 1. The user connects Meta ad account act_42.
SELECT outcome AS first_outcome, connection_id AS conn, created_at AS created,
       updated_at AS first_updated
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42',
           p_account_name => 'Acme Ads', p_access_token => 'access-1',
           p_refresh_token => 'refresh-1', p_scopes => '["ads_read"]') \gset
SELECT is(:'first_outcome'::text, 'created', 'connecting a new account creates a row');
SELECT results_eq(
    format($$SELECT status::text, deleted_at, auto_sync, sync_frequency_minutes
               FROM cmis.platform_connections WHERE connection_id = %L$$, :'conn'),
    $$VALUES ('active', NULL::timestamptz, true, 15)$$,
    'a new connection is active, live, and has the default sync settings');

-- 2. The user disconnects it; the app marks it revoked first.
SELECT is(outcome, 'updated', 'marking the live row revoked updates it')
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42', p_status => 'revoked');
SELECT is(count(*), 1::bigint, 'soft_delete returns the deleted row')
  FROM cmis.soft_delete_platform_connection(:'org', :'conn');
SELECT deleted_at AS disconnected_at FROM cmis.platform_connections
 WHERE connection_id = :'conn' \gset
SELECT isnt(:'disconnected_at'::timestamptz, NULL, 'the row is soft-deleted, not removed');

-- 3. Weeks later the user connects the same account again.
SELECT outcome AS again_outcome, connection_id AS again_conn, created_at AS again_created,
       status AS again_status, access_token AS again_access,
       refresh_token AS again_refresh, account_name AS again_name, updated_at AS again_updated
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42',
           p_access_token => 'access-2') \gset
SELECT is(:'again_outcome'::text, 'restored', 'reconnecting restores the soft-deleted row');
SELECT is(:'again_conn'::uuid, :'conn'::uuid, 'the restored row keeps its connection_id');
SELECT is(:'again_created'::timestamptz, :'created'::timestamptz,
          'the restored row keeps its created_at');
SELECT is(:'again_status'::text, 'active', 'reconnecting re-activates: status is back to active');
SELECT is(deleted_at, NULL, 'the restored row is live again (deleted_at IS NULL)')
  FROM cmis.platform_connections WHERE connection_id = :'conn';
SELECT is(:'again_access'::text, 'access-2', 'the new access token is stored');
SELECT is(:'again_refresh'::text, 'refresh-1', 'a token not passed (NULL) keeps its stored value');
SELECT is(:'again_name'::text, 'Acme Ads', 'the account name not passed is kept');
SELECT cmp_ok(:'again_updated'::timestamptz, '>', :'disconnected_at'::timestamptz,
              'updated_at moved past the disconnect');
SELECT is(count(*), 1::bigint, 'the key still has exactly one row: no duplicate was created')
  FROM cmis.platform_connections
 WHERE org_id = :'org' AND platform = 'meta' AND account_id = 'act_42';

---------------------------------------------------------------------------
-- Updating a live row.
---------------------------------------------------------------------------
SELECT outcome AS upd_outcome, connection_id AS upd_conn, access_token AS upd_access,
       token_expires_at AS upd_expires, account_metadata AS upd_metadata
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42',
           p_access_token => 'access-3', p_token_expires_at => '2030-01-01 00:00:00+00',
           p_account_metadata => '{"currency": "EUR"}') \gset
SELECT is(:'upd_outcome'::text, 'updated', 'upserting a live key updates it');
SELECT is(:'upd_conn'::uuid, :'conn'::uuid, 'the update keeps the connection_id');
SELECT is(:'upd_access'::text, 'access-3', 'the update stores the new token');
SELECT is(:'upd_expires'::timestamptz, '2030-01-01 00:00:00+00'::timestamptz,
          'the update stores the new expiry');
SELECT is(:'upd_metadata'::jsonb, '{"currency": "EUR"}'::jsonb, 'the update stores the metadata');

---------------------------------------------------------------------------
-- NULL arguments keep the stored values; p_status left out means 'active'.
---------------------------------------------------------------------------
SELECT outcome FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42',
    p_status => 'warning', p_auto_sync => false, p_sync_frequency_minutes => 60) \gset
CREATE TEMP TABLE before_nulls ON COMMIT DROP AS
    SELECT * FROM cmis.platform_connections WHERE connection_id = :'conn';
CREATE TEMP TABLE after_nulls ON COMMIT DROP AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42',
        p_account_name => NULL, p_status => NULL, p_access_token => NULL,
        p_refresh_token => NULL, p_token_expires_at => NULL, p_scopes => NULL,
        p_account_metadata => NULL, p_auto_sync => NULL, p_sync_frequency_minutes => NULL);
SELECT is((SELECT outcome FROM after_nulls), 'updated', 'a call with every value NULL updates');
SELECT results_eq(
    $$SELECT connection_id, account_name, status, access_token, refresh_token, token_expires_at,
             scopes, account_metadata, auto_sync, sync_frequency_minutes, created_at, deleted_at
        FROM before_nulls$$,
    $$SELECT connection_id, account_name, status, access_token, refresh_token, token_expires_at,
             scopes, account_metadata, auto_sync, sync_frequency_minutes, created_at, deleted_at
        FROM after_nulls$$,
    'NULL for every optional argument keeps every stored value (status warning included)');
SELECT cmp_ok((SELECT updated_at FROM after_nulls), '>', (SELECT updated_at FROM before_nulls),
              'even a call that changes no value moves updated_at');
SELECT is(status::text, 'active', 'leaving p_status out re-activates (its default is active)')
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42');

---------------------------------------------------------------------------
-- updated_at moves on every call, even twice in one transaction (this whole
-- script is one transaction, so now() would not move: clock_timestamp does).
---------------------------------------------------------------------------
SELECT updated_at AS t1 FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42') \gset
SELECT updated_at AS t2 FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42') \gset
SELECT cmp_ok(:'t2'::timestamptz, '>', :'t1'::timestamptz,
              'two calls in one transaction: the second moves updated_at again');
SELECT cmp_ok(:'t1'::timestamptz, '>', now(), 'updated_at is the time of the call, not of BEGIN');
SELECT is(updated_at, :'t2'::timestamptz, 'the returned updated_at is the stored one')
  FROM cmis.platform_connections WHERE connection_id = :'conn';
SELECT updated_at AS t3 FROM cmis.soft_delete_platform_connection(:'org', :'conn') \gset
SELECT cmp_ok(:'t3'::timestamptz, '>', :'t2'::timestamptz, 'soft_delete moves updated_at');
SELECT updated_at AS t4 FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_42') \gset
SELECT cmp_ok(:'t4'::timestamptz, '>', :'t3'::timestamptz, 'a restoring upsert moves updated_at');

---------------------------------------------------------------------------
-- Named parameters, in any order; the rest take their defaults.
---------------------------------------------------------------------------
CREATE TEMP TABLE named ON COMMIT DROP AS
    SELECT * FROM cmis.upsert_platform_connection(
        p_sync_frequency_minutes => 60,
        p_account_id => '123-456-7890',
        p_auto_sync => false,
        p_platform => 'google_ads',
        p_org_id => :'org');
SELECT results_eq(
    $$SELECT outcome, platform::text, account_id::text, status::text, auto_sync,
             sync_frequency_minutes, account_name, access_token
        FROM named$$,
    $$VALUES ('created', 'google_ads', '123-456-7890', 'active', false, 60, NULL::varchar,
              NULL::text)$$,
    'a call with named parameters in any order creates the row with those values and defaults');
SELECT is(outcome, 'updated', 'a named-parameter call with only the key updates it')
  FROM cmis.upsert_platform_connection(p_org_id => :'org', p_platform => 'google_ads',
                                       p_account_id => '123-456-7890');

---------------------------------------------------------------------------
-- Exactly one row, every column, equal to what is stored.
---------------------------------------------------------------------------
CREATE TEMP TABLE returned ON COMMIT DROP AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'tiktok', 'tt_1',
        p_account_name => 'TikTok shop', p_status => 'pending', p_access_token => 'a',
        p_refresh_token => 'r', p_token_expires_at => '2031-06-01 12:00:00+00',
        p_scopes => '["video.list"]', p_account_metadata => '{"region": "EU"}',
        p_auto_sync => true, p_sync_frequency_minutes => 5);
SELECT is(count(*), 1::bigint, 'create: upsert returns exactly one row') FROM returned;
SELECT results_eq(
    $$SELECT connection_id, org_id, platform, account_id, account_name, status, access_token,
             refresh_token, token_expires_at, scopes, account_metadata, last_sync_at,
             last_error_at, last_error_message, auto_sync, sync_frequency_minutes, created_at,
             updated_at, deleted_at
        FROM returned$$,
    $$SELECT connection_id, org_id, platform, account_id, account_name, status, access_token,
             refresh_token, token_expires_at, scopes, account_metadata, last_sync_at,
             last_error_at, last_error_message, auto_sync, sync_frequency_minutes, created_at,
             updated_at, deleted_at
        FROM cmis.platform_connections
       WHERE connection_id = (SELECT connection_id FROM returned)$$,
    'the returned row is the stored row, column for column');
SELECT results_eq(
    $$SELECT status::text, access_token, refresh_token, token_expires_at, scopes,
             account_metadata, auto_sync, sync_frequency_minutes FROM returned$$,
    $$VALUES ('pending', 'a', 'r', '2031-06-01 12:00:00+00'::timestamptz, '["video.list"]'::jsonb,
              '{"region": "EU"}'::jsonb, true, 5)$$,
    'every argument passed is stored');
SELECT is(created_at, updated_at, 'a created row has created_at = updated_at') FROM returned;
SELECT is(count(*), 1::bigint, 'update: upsert returns exactly one row')
  FROM cmis.upsert_platform_connection(:'org', 'tiktok', 'tt_1');
SELECT is(count(*), 1::bigint, 'soft_delete of the tiktok row returns it')
  FROM cmis.soft_delete_platform_connection(:'org', (SELECT connection_id FROM returned));
SELECT is(count(*), 1::bigint, 'restore: upsert returns exactly one row')
  FROM cmis.upsert_platform_connection(:'org', 'tiktok', 'tt_1');

---------------------------------------------------------------------------
-- Several deleted rows for one key: the most recently deleted is restored.
-- The newest is neither the first nor the last inserted, nor the smallest or
-- largest id, so no accident of physical or id order can pick it.
---------------------------------------------------------------------------
INSERT INTO cmis.platform_connections (connection_id, org_id, platform, account_id, account_name,
                                       created_at, deleted_at)
VALUES ('00000000-0000-4000-8000-000000000004', :'org', 'linkedin', 'li_9', 'three days',
        now() - interval '9 days', now() - interval '3 days'),
       ('00000000-0000-4000-8000-000000000002', :'org', 'linkedin', 'li_9', 'newest',
        now() - interval '8 days', now() - interval '1 hour'),
       ('00000000-0000-4000-8000-000000000001', :'org', 'linkedin', 'li_9', 'five days',
        now() - interval '7 days', now() - interval '5 days'),
       ('00000000-0000-4000-8000-000000000003', :'org', 'linkedin', 'li_9', 'two days',
        now() - interval '6 days', now() - interval '2 days');
SELECT results_eq(
    format($$SELECT outcome, connection_id, account_name::text, deleted_at
               FROM cmis.upsert_platform_connection(p_org_id => %L, p_platform => 'linkedin',
                                                    p_account_id => 'li_9')$$, :'org'),
    $$VALUES ('restored', '00000000-0000-4000-8000-000000000002'::uuid, 'newest',
              NULL::timestamptz)$$,
    'of several deleted rows, the most recently deleted one is restored');
SELECT results_eq(
    format($$SELECT connection_id FROM cmis.platform_connections
              WHERE org_id = %L AND platform = 'linkedin' AND deleted_at IS NOT NULL
              ORDER BY connection_id$$, :'org'),
    $$VALUES ('00000000-0000-4000-8000-000000000001'::uuid),
             ('00000000-0000-4000-8000-000000000003'::uuid),
             ('00000000-0000-4000-8000-000000000004'::uuid)$$,
    'the older deleted rows stay deleted history');
SELECT is(outcome, 'updated', 'the next upsert of that key updates the restored row')
  FROM cmis.upsert_platform_connection(:'org', 'linkedin', 'li_9');

---------------------------------------------------------------------------
-- Keys are per organisation, platform and account.
---------------------------------------------------------------------------
SELECT gen_random_uuid() AS other_org \gset
INSERT INTO cmis.orgs (org_id, name) VALUES (:'other_org', 'pgTAP other org');
SELECT isnt(connection_id, :'conn'::uuid,
            'the same platform and account in another organisation is another connection')
  FROM cmis.upsert_platform_connection(:'other_org', 'meta', 'act_42');
SELECT is(outcome, 'created', 'the same account on another platform is a new connection')
  FROM cmis.upsert_platform_connection(:'org', 'google', 'act_42');

SELECT * FROM finish();
ROLLBACK;
