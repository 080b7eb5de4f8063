-- Every bad argument to cmis.upsert_platform_connection raises its SQLSTATE
-- and writes nothing: NULL -> 22004, blank or malformed -> 22023, too long
-- -> 22001, unknown organisation -> 23503.
--
-- Each bad call is a prepared statement, so it reads as the call a user
-- would type; throws_ok runs it by name.
--
-- Run by hand:  psql -X -v ON_ERROR_STOP=1 -d cmis -f tests/sql/30_bad_inputs.sql
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(39);

SELECT gen_random_uuid() AS org, gen_random_uuid() AS unknown_org,
       repeat('a', 51) AS slug_51, repeat('a', 50) AS slug_50,
       repeat('9', 256) AS account_256, repeat('9', 255) AS account_255,
       repeat('n', 256) AS name_256, repeat('n', 255) AS name_255 \gset
INSERT INTO cmis.orgs (org_id, name) VALUES (:'org', 'pgTAP bad inputs org');

-- A live row and a deleted row the bad calls aim at: neither may change.
SELECT connection_id AS live_conn
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1', p_account_name => 'Acme Ads',
           p_status => 'warning', p_access_token => 'access-1', p_refresh_token => 'refresh-1',
           p_sync_frequency_minutes => 30) \gset
SELECT connection_id AS deleted_conn
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_gone') \gset
SELECT deleted_at AS gone_at
  FROM cmis.soft_delete_platform_connection(:'org', :'deleted_conn') \gset

CREATE TEMP TABLE table_before ON COMMIT DROP AS SELECT * FROM cmis.platform_connections;
SELECT count(*) AS rows_before FROM cmis.platform_connections \gset

---------------------------------------------------------------------------
-- NULL key parts: 22004 null_value_not_allowed.
---------------------------------------------------------------------------
PREPARE null_org AS SELECT * FROM cmis.upsert_platform_connection(NULL, 'meta', 'act_1');
SELECT throws_ok('null_org', '22004', 'p_org_id must not be NULL', 'NULL org: 22004');
PREPARE null_platform AS SELECT * FROM cmis.upsert_platform_connection(:'org', NULL, 'act_1');
SELECT throws_ok('null_platform', '22004', 'p_platform must not be NULL', 'NULL platform: 22004');
PREPARE null_account AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', NULL);
SELECT throws_ok('null_account', '22004', 'p_account_id must not be NULL', 'NULL account: 22004');

---------------------------------------------------------------------------
-- Blank or malformed values: 22023 invalid_parameter_value.
---------------------------------------------------------------------------
PREPARE empty_platform AS SELECT * FROM cmis.upsert_platform_connection(:'org', '', 'act_1');
SELECT throws_ok('empty_platform', '22023', 'p_platform must not be blank',
                 'empty platform: 22023');
PREPARE blank_platform AS SELECT * FROM cmis.upsert_platform_connection(:'org', '   ', 'act_1');
SELECT throws_ok('blank_platform', '22023', 'p_platform must not be blank',
                 'whitespace-only platform: 22023');
PREPARE empty_account AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', '');
SELECT throws_ok('empty_account', '22023', 'p_account_id must not be blank',
                 'empty account id: 22023');
PREPARE blank_account AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', '   ');
SELECT throws_ok('blank_account', '22023', 'p_account_id must not be blank',
                 'spaces-only account id: 22023');
PREPARE tab_account AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', E'\t');
SELECT throws_ok('tab_account', '22023', 'p_account_id must not be blank',
                 'a tab as account id (whitespace only): 22023');
PREPARE newline_account AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', E' \n ');
SELECT throws_ok('newline_account', '22023', 'p_account_id must not be blank',
                 'spaces and a newline as account id (whitespace only): 22023');

PREPARE padded_account AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', ' act_1');
SELECT throws_ok('padded_account', '22023',
                 'p_account_id must not start or end with white space, got '' act_1''',
                 'account '' act_1'' (leading space): 22023, not a second key');
PREPARE trailing_account AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', E'act_1\t');
SELECT throws_ok('trailing_account', '22023', NULL, 'account E''act_1\t'' (trailing tab): 22023');

PREPARE upper_platform AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'Meta', 'act_1');
SELECT throws_ok('upper_platform', '22023', 'p_platform must be a lower-case slug, got ''Meta''',
                 'platform ''Meta'' (upper case): 22023');
PREPARE spaced_platform AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta ads', 'act_1');
SELECT throws_ok('spaced_platform', '22023', NULL, 'platform ''meta ads'' (a space): 22023');
PREPARE slashed_platform AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta/ads', 'act_1');
SELECT throws_ok('slashed_platform', '22023', NULL, 'platform ''meta/ads'' (a slash): 22023');
PREPARE padded_platform AS SELECT * FROM cmis.upsert_platform_connection(:'org', ' meta', 'act_1');
SELECT throws_ok('padded_platform', '22023', NULL, 'platform '' meta'' (leading space): 22023');
PREPARE newline_platform AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', E'meta\n', 'act_1');
SELECT throws_ok('newline_platform', '22023', NULL,
                 'platform E''meta\n'' (trailing newline): 22023');
PREPARE dashed_platform AS SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta-', 'act_1');
SELECT throws_ok('dashed_platform', '22023', NULL, 'platform ''meta-'' (trailing dash): 22023');

PREPARE paused_status AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1', p_status => 'paused');
SELECT throws_ok('paused_status', '22023', NULL, 'status ''paused'' (not in the list): 22023');
PREPARE empty_status AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1', p_status => '');
SELECT throws_ok('empty_status', '22023', NULL, 'status '''' (empty): 22023');
PREPARE upper_status AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1', p_status => 'ACTIVE');
SELECT throws_ok('upper_status', '22023', NULL, 'status ''ACTIVE'' (upper case): 22023');
PREPARE status_on_deleted AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_gone', p_status => 'paused');
SELECT throws_ok('status_on_deleted', '22023', NULL,
                 'a bad status for a deleted key: 22023 (and it is not restored)');

PREPARE zero_frequency AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1',
                                                  p_sync_frequency_minutes => 0);
SELECT throws_ok('zero_frequency', '22023',
                 'p_sync_frequency_minutes must be a positive number of minutes, got 0',
                 'sync frequency 0: 22023');
PREPARE negative_frequency AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1',
                                                  p_sync_frequency_minutes => -5);
SELECT throws_ok('negative_frequency', '22023', NULL, 'sync frequency -5: 22023');

---------------------------------------------------------------------------
-- Too long for the column: 22001 string_data_right_truncation.
---------------------------------------------------------------------------
PREPARE long_platform AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', :'slug_51', 'act_1');
SELECT throws_ok('long_platform', '22001', 'p_platform is 51 characters long; at most 50 fit',
                 'a 51-character platform slug: 22001');
PREPARE long_account AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', :'account_256');
SELECT throws_ok('long_account', '22001', 'p_account_id is 256 characters long; at most 255 fit',
                 'a 256-character account id: 22001');
PREPARE long_name AS
    SELECT * FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1',
                                                  p_account_name => :'name_256');
SELECT throws_ok('long_name', '22001', 'p_account_name is 256 characters long; at most 255 fit',
                 'a 256-character account name: 22001');

---------------------------------------------------------------------------
-- An organisation not in cmis.orgs: 23503 foreign_key_violation.
---------------------------------------------------------------------------
PREPARE unknown_org AS
    SELECT * FROM cmis.upsert_platform_connection(:'unknown_org', 'meta', 'act_1');
SELECT throws_ok('unknown_org', '23503', NULL, 'an organisation not in cmis.orgs: 23503');

---------------------------------------------------------------------------
-- Nothing was written by any of them.
---------------------------------------------------------------------------
SELECT is(count(*), :'rows_before'::bigint, 'no bad call added or removed a row')
  FROM cmis.platform_connections;
SELECT results_eq(
    'SELECT * FROM cmis.platform_connections ORDER BY connection_id',
    'SELECT * FROM table_before ORDER BY connection_id',
    'no bad call changed a row: every column of every row, updated_at included, is as before');
SELECT results_eq(
    format($$SELECT status::text, access_token, sync_frequency_minutes
               FROM cmis.platform_connections WHERE connection_id = %L$$, :'live_conn'),
    $$VALUES ('warning', 'access-1', 30)$$,
    'the live row the bad calls aimed at keeps its status, token and frequency');
SELECT isnt(deleted_at, NULL, 'the deleted row the bad call aimed at stays deleted')
  FROM cmis.platform_connections WHERE connection_id = :'deleted_conn';

-- Nor does a bad call write when it comes after good ones in a transaction:
-- a savepoint shows the failed call alone is undone.
SAVEPOINT before_bad_call;
SELECT lives_ok(
    format($$SELECT * FROM cmis.upsert_platform_connection(%L, 'meta', 'act_1',
                                                           p_access_token => 'access-2')$$,
           :'org'),
    'a good call updates the row');
SELECT throws_ok(
    format($$SELECT * FROM cmis.upsert_platform_connection(%L, 'meta', 'act_1',
                                                           p_access_token => 'access-3',
                                                           p_status => 'paused')$$,
           :'org'),
    '22023', NULL, 'a bad call right after it raises');
SELECT is(access_token, 'access-2', 'the good call''s value stays; the bad call''s is not written')
  FROM cmis.platform_connections WHERE connection_id = :'live_conn';
ROLLBACK TO SAVEPOINT before_bad_call;

---------------------------------------------------------------------------
-- The edge values that fit are accepted.
---------------------------------------------------------------------------
SELECT is(outcome, 'created', 'a 255-character account id fits')
  FROM cmis.upsert_platform_connection(:'org', 'meta', :'account_255');
SELECT is(outcome, 'created', 'a 50-character platform slug fits')
  FROM cmis.upsert_platform_connection(:'org', :'slug_50', 'act_1');
SELECT is(outcome, 'updated', 'a 255-character account name fits')
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1', p_account_name => :'name_255');
SELECT is(outcome, 'created', 'slugs may join words with - or _ and hold digits')
  FROM cmis.upsert_platform_connection(:'org', 'google_ads-v2', 'act_1');
SELECT is(status::text, 'pending', 'every listed status is accepted (pending)')
  FROM cmis.upsert_platform_connection(:'org', 'meta', 'act_1', p_status => 'pending');

SELECT * FROM finish();
ROLLBACK;
