-- cmis.soft_delete_platform_connection and cmis.restore_platform_connection
-- as a user calls them: the row comes back, or no row when nothing matched.
--
-- Run by hand:  psql -X -v ON_ERROR_STOP=1 -d cmis -f tests/sql/20_soft_delete_restore.sql
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(34);

SELECT gen_random_uuid() AS org, gen_random_uuid() AS other_org, gen_random_uuid() AS nobody \gset
INSERT INTO cmis.orgs (org_id, name) VALUES (:'org', 'pgTAP delete org'),
                                            (:'other_org', 'pgTAP other org');

SELECT connection_id AS conn, updated_at AS conn_updated
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1',
           p_account_name => 'Acme Ads', p_access_token => 'access-1') \gset
SELECT connection_id AS other_conn
  FROM cmis.upsert_platform_connection(:'other_org', 'meta', 'act_1') \gset

---------------------------------------------------------------------------
-- soft_delete
---------------------------------------------------------------------------
CREATE TEMP TABLE deleted ON COMMIT DROP AS
    SELECT * FROM cmis.soft_delete_platform_connection(:'org', :'conn');
SELECT is(count(*), 1::bigint, 'soft_delete of a live connection returns one row') FROM deleted;
SELECT results_eq(
    $$SELECT connection_id, account_name::text, access_token FROM deleted$$,
    format($$VALUES (%L::uuid, 'Acme Ads', 'access-1')$$, :'conn'),
    'soft_delete returns the row it deleted, its values kept');
SELECT isnt(deleted_at, NULL, 'the returned row has deleted_at set') FROM deleted;
SELECT is(updated_at, deleted_at, 'soft_delete sets updated_at to the deletion time') FROM deleted;
SELECT cmp_ok(updated_at, '>', :'conn_updated'::timestamptz, 'soft_delete moves updated_at')
  FROM deleted;
SELECT results_eq(
    format($$SELECT deleted_at FROM cmis.platform_connections WHERE connection_id = %L$$, :'conn'),
    $$SELECT deleted_at FROM deleted$$,
    'the row is still in the table, soft-deleted');

SELECT is_empty(
    format($$SELECT * FROM cmis.soft_delete_platform_connection(%L, %L)$$, :'org', :'conn'),
    'soft_delete of an already deleted row returns no row');
SELECT results_eq(
    format($$SELECT deleted_at FROM cmis.platform_connections WHERE connection_id = %L$$, :'conn'),
    $$SELECT deleted_at FROM deleted$$,
    'deleting again does not move deleted_at');
SELECT is_empty(
    format($$SELECT * FROM cmis.soft_delete_platform_connection(%L, gen_random_uuid())$$, :'org'),
    'soft_delete of an unknown connection_id returns no row');
SELECT is_empty(
    format($$SELECT * FROM cmis.soft_delete_platform_connection(%L, %L)$$, :'org', :'other_conn'),
    'soft_delete of another organisation''s connection returns no row');
SELECT is(deleted_at, NULL, 'and the other organisation''s connection stays live')
  FROM cmis.platform_connections WHERE connection_id = :'other_conn';
SELECT is_empty(
    format($$SELECT * FROM cmis.soft_delete_platform_connection(%L, %L)$$, :'nobody', :'conn'),
    'soft_delete for an organisation that does not exist returns no row');

PREPARE soft_delete_null_org AS
    SELECT * FROM cmis.soft_delete_platform_connection(NULL, :'conn');
SELECT throws_ok('soft_delete_null_org', '22004', 'p_org_id must not be NULL',
                 'soft_delete with a NULL org raises 22004');
PREPARE soft_delete_null_id AS
    SELECT * FROM cmis.soft_delete_platform_connection(:'org', NULL);
SELECT throws_ok('soft_delete_null_id', '22004', 'p_connection_id must not be NULL',
                 'soft_delete with a NULL connection_id raises 22004');
SELECT is(count(*), 1::bigint, 'soft_delete takes named parameters')
  FROM cmis.soft_delete_platform_connection(p_connection_id => :'other_conn',
                                            p_org_id => :'other_org');

---------------------------------------------------------------------------
-- restore
---------------------------------------------------------------------------
CREATE TEMP TABLE restored ON COMMIT DROP AS
    SELECT * FROM cmis.restore_platform_connection(:'org', :'conn');
SELECT is(count(*), 1::bigint, 'restore of a deleted connection returns one row') FROM restored;
SELECT results_eq(
    $$SELECT connection_id, account_name::text, access_token, status::text, created_at
        FROM restored$$,
    $$SELECT connection_id, account_name::text, access_token, status::text, created_at
        FROM deleted$$,
    'restore brings the row back with its values, id and created_at as they were');
SELECT is(deleted_at, NULL, 'the restored row is live') FROM restored;
SELECT cmp_ok(r.updated_at, '>', d.updated_at, 'restore moves updated_at')
  FROM restored AS r, deleted AS d;
SELECT is(deleted_at, NULL, 'the table says so too')
  FROM cmis.platform_connections WHERE connection_id = :'conn';

CREATE TEMP TABLE restored_again ON COMMIT DROP AS
    SELECT * FROM cmis.restore_platform_connection(:'org', :'conn');
SELECT is(count(*), 1::bigint, 'restore of a live connection returns it (idempotent)')
  FROM restored_again;
SELECT results_eq('SELECT * FROM restored_again', 'SELECT * FROM restored',
                  'restoring a live connection changes nothing, updated_at included');

SELECT is_empty(
    format($$SELECT * FROM cmis.restore_platform_connection(%L, gen_random_uuid())$$, :'org'),
    'restore of an unknown connection_id returns no row');
SELECT is_empty(
    format($$SELECT * FROM cmis.restore_platform_connection(%L, %L)$$, :'org', :'other_conn'),
    'restore of another organisation''s connection returns no row');
SELECT isnt(deleted_at, NULL, 'and the other organisation''s connection stays deleted')
  FROM cmis.platform_connections WHERE connection_id = :'other_conn';

PREPARE restore_null_org AS SELECT * FROM cmis.restore_platform_connection(NULL, :'conn');
SELECT throws_ok('restore_null_org', '22004', 'p_org_id must not be NULL',
                 'restore with a NULL org raises 22004');
PREPARE restore_null_id AS SELECT * FROM cmis.restore_platform_connection(:'org', NULL);
SELECT throws_ok('restore_null_id', '22004', 'p_connection_id must not be NULL',
                 'restore with a NULL connection_id raises 22004');

-- A deleted history row of a key whose live row exists cannot come back.
INSERT INTO cmis.platform_connections (connection_id, org_id, platform, account_id,
                                       account_name, deleted_at)
VALUES ('00000000-0000-4000-8000-00000000d1d1', :'org', 'meta', 'act_1', 'old history',
        now() - interval '30 days');
PREPARE restore_over_live AS
    SELECT * FROM cmis.restore_platform_connection(:'org', '00000000-0000-4000-8000-00000000d1d1');
SELECT throws_ok('restore_over_live', '23505', NULL,
                 'restore raises 23505 when another live row holds the key');
SELECT isnt(deleted_at, NULL, 'the history row stays deleted')
  FROM cmis.platform_connections WHERE connection_id = '00000000-0000-4000-8000-00000000d1d1';
SELECT results_eq('SELECT connection_id, updated_at, deleted_at FROM restored',
    format($$SELECT connection_id, updated_at, deleted_at FROM cmis.platform_connections
              WHERE connection_id = %L$$, :'conn'),
    'the live row is untouched by the refused restore');

-- Once the live row is disconnected, the history row can be restored.
SELECT is(count(*), 1::bigint, 'soft_delete of the live row')
  FROM cmis.soft_delete_platform_connection(:'org', :'conn');
SELECT results_eq(
    format($$SELECT connection_id, account_name::text, deleted_at
               FROM cmis.restore_platform_connection(
                        p_org_id => %L,
                        p_connection_id => '00000000-0000-4000-8000-00000000d1d1')$$, :'org'),
    $$VALUES ('00000000-0000-4000-8000-00000000d1d1'::uuid, 'old history', NULL::timestamptz)$$,
    'restore of a chosen history row (named parameters) brings back that one');
SELECT is(count(*), 1::bigint, 'the key has exactly one live row')
  FROM cmis.platform_connections
 WHERE org_id = :'org' AND platform = 'meta' AND account_id = 'act_1' AND deleted_at IS NULL;
SELECT results_eq(
    format($$SELECT outcome, connection_id
               FROM cmis.upsert_platform_connection(%L, 'meta', 'act_1')$$, :'org'),
    $$VALUES ('updated', '00000000-0000-4000-8000-00000000d1d1'::uuid)$$,
    'an upsert of the key now updates the restored history row');

SELECT * FROM finish();
ROLLBACK;
