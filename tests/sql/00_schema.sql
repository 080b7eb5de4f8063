-- The objects a caller relies on: the seven functions (signature, result,
-- pinned search_path, comment) and the indexes of cmis.platform_connections.
--
-- Run by hand:  psql -X -v ON_ERROR_STOP=1 -d cmis -f tests/sql/00_schema.sql
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(47);

-- upsert_platform_connection's argument types, in order (as :'upsert_args').
SELECT ARRAY['uuid', 'text', 'text', 'text', 'text', 'text', 'text', 'timestamp with time zone',
             'jsonb', 'jsonb', 'boolean', 'integer'] AS upsert_args \gset

---------------------------------------------------------------------------
-- The functions exist with exactly these signatures, and only once each.
---------------------------------------------------------------------------
SELECT has_function('cmis', 'upsert_platform_connection', :'upsert_args'::name[],
                    'cmis.upsert_platform_connection(uuid, text, text, ...) exists');
SELECT has_function('cmis', 'soft_delete_platform_connection', ARRAY['uuid', 'uuid'],
                    'cmis.soft_delete_platform_connection(uuid, uuid) exists');
SELECT has_function('cmis', 'restore_platform_connection', ARRAY['uuid', 'uuid'],
                    'cmis.restore_platform_connection(uuid, uuid) exists');
SELECT has_function('cmis', 'lock_platform_connection_key', ARRAY['uuid', 'text', 'text'],
                    'cmis.lock_platform_connection_key(uuid, text, text) exists');
SELECT has_function('cmis', 'purge_platform_connections', ARRAY['uuid', 'interval'],
                    'cmis.purge_platform_connections(uuid, interval) exists');
SELECT has_function('cmis', 'assert_platform_connection_org_scope', ARRAY['uuid'],
                    'cmis.assert_platform_connection_org_scope(uuid) exists');
SELECT has_function('cmis', 'upsert_platform_connections', ARRAY['uuid', 'jsonb'],
                    'cmis.upsert_platform_connections(uuid, jsonb) exists');

SELECT is(
    (SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc
      WHERE pronamespace = 'cmis'::regnamespace AND proname ~ 'platform_connection'),
    ARRAY['assert_platform_connection_org_scope', 'lock_platform_connection_key',
          'purge_platform_connections', 'restore_platform_connection',
          'soft_delete_platform_connection', 'upsert_platform_connection',
          'upsert_platform_connections'],
    'each function has exactly one overload (a call can never pick a stale one)');

---------------------------------------------------------------------------
-- What they return.
---------------------------------------------------------------------------
SELECT function_returns('cmis', 'upsert_platform_connection', :'upsert_args'::name[],
                        'setof record',
                        'upsert returns a table (RETURNS TABLE)');
SELECT function_returns('cmis', 'soft_delete_platform_connection', ARRAY['uuid', 'uuid'],
                        'setof cmis.platform_connections', 'soft_delete returns rows of the table');
SELECT function_returns('cmis', 'restore_platform_connection', ARRAY['uuid', 'uuid'],
                        'setof cmis.platform_connections', 'restore returns rows of the table');
SELECT function_returns('cmis', 'lock_platform_connection_key', ARRAY['uuid', 'text', 'text'],
                        'void', 'lock_platform_connection_key returns void');
SELECT function_returns('cmis', 'purge_platform_connections', ARRAY['uuid', 'interval'],
                        'bigint', 'purge returns how many rows it deleted');
SELECT function_returns('cmis', 'assert_platform_connection_org_scope', ARRAY['uuid'],
                        'void', 'assert_platform_connection_org_scope returns void');
SELECT function_returns('cmis', 'upsert_platform_connections', ARRAY['uuid', 'jsonb'],
                        'setof record', 'the bulk upsert returns a table (RETURNS TABLE)');

-- The bulk call's result columns: ord, outcome, then every column of the table in order.
SELECT is(
    (SELECT array_agg(name ORDER BY ord)
       FROM pg_proc AS p,
            unnest(p.proargnames, p.proargmodes) WITH ORDINALITY AS a (name, mode, ord)
      WHERE p.oid = 'cmis.upsert_platform_connections'::regproc AND a.mode = 't'),
    ARRAY['ord', 'outcome']::text[] || (
        SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
         WHERE attrelid = 'cmis.platform_connections'::regclass
           AND attnum > 0 AND NOT attisdropped),
    'the bulk upsert returns ord, outcome and every column of cmis.platform_connections');

-- upsert's result columns: outcome, then every column of the table in order.
SELECT is(
    (SELECT array_agg(name ORDER BY ord)
       FROM pg_proc AS p,
            unnest(p.proargnames, p.proargmodes) WITH ORDINALITY AS a (name, mode, ord)
      WHERE p.oid = 'cmis.upsert_platform_connection'::regproc AND a.mode = 't'),
    ARRAY['outcome']::text[] || (
        SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
         WHERE attrelid = 'cmis.platform_connections'::regclass
           AND attnum > 0 AND NOT attisdropped),
    'upsert returns outcome followed by every column of cmis.platform_connections, in table order');

---------------------------------------------------------------------------
-- SECURITY INVOKER (row-level security applies) and a pinned search_path.
---------------------------------------------------------------------------
SELECT isnt_definer('cmis', 'upsert_platform_connection', :'upsert_args'::name[],
                    'upsert runs as the caller (SECURITY INVOKER)');
SELECT isnt_definer('cmis', 'soft_delete_platform_connection', ARRAY['uuid', 'uuid'],
                    'soft_delete runs as the caller (SECURITY INVOKER)');
SELECT isnt_definer('cmis', 'restore_platform_connection', ARRAY['uuid', 'uuid'],
                    'restore runs as the caller (SECURITY INVOKER)');
SELECT isnt_definer('cmis', 'purge_platform_connections', ARRAY['uuid', 'interval'],
                    'purge runs as the caller (SECURITY INVOKER)');
SELECT isnt_definer('cmis', 'assert_platform_connection_org_scope', ARRAY['uuid'],
                    'assert_platform_connection_org_scope runs as the caller (SECURITY INVOKER)');
SELECT isnt_definer('cmis', 'upsert_platform_connections', ARRAY['uuid', 'jsonb'],
                    'the bulk upsert runs as the caller (SECURITY INVOKER)');

-- "Pinned": SET search_path on the function itself, naming neither public
-- nor "$user", with pg_temp listed explicitly (last) so that no temporary
-- object can shadow a catalog one.
SELECT ok(
    EXISTS (SELECT FROM unnest(p.proconfig) AS setting
             WHERE setting ~ '^search_path='
               AND setting !~ '(public|\$user)'
               AND setting ~ 'pg_temp$'),
    format('%s has a pinned search_path (proconfig = %s)', p.proname, p.proconfig))
  FROM pg_proc AS p
 WHERE p.pronamespace = 'cmis'::regnamespace AND p.proname ~ 'platform_connection'
 ORDER BY p.proname;

-- Every function is documented where \df+ and obj_description() look.
SELECT ok(
    length(obj_description(p.oid, 'pg_proc')) > 100,
    format('%s has a comment (COMMENT ON FUNCTION)', p.proname))
  FROM pg_proc AS p
 WHERE p.pronamespace = 'cmis'::regnamespace AND p.proname ~ 'platform_connection'
 ORDER BY p.proname;
SELECT ok(
    obj_description('cmis.upsert_platform_connection'::regproc, 'pg_proc') ~ 'restored'
        AND obj_description('cmis.upsert_platform_connection'::regproc, 'pg_proc') ~ '23503',
    'upsert''s comment names its outcomes and its error codes');

---------------------------------------------------------------------------
-- Indexes of cmis.platform_connections.
---------------------------------------------------------------------------
SELECT indexes_are('cmis', 'platform_connections',
    ARRAY['platform_connections_pkey', 'idx_platform_connections_unique',
          'idx_platform_connections_lookup'],
    'platform_connections has the primary key, the partial unique index and the lookup index');
SELECT index_is_unique('cmis', 'platform_connections', 'idx_platform_connections_unique',
                       'idx_platform_connections_unique is unique');
SELECT has_index('cmis', 'platform_connections', 'idx_platform_connections_unique',
                 ARRAY['org_id', 'platform', 'account_id'],
                 'idx_platform_connections_unique is on (org_id, platform, account_id)');
SELECT is(
    (SELECT indexdef FROM pg_indexes
      WHERE schemaname = 'cmis' AND indexname = 'idx_platform_connections_unique'),
    'CREATE UNIQUE INDEX idx_platform_connections_unique ON cmis.platform_connections '
        'USING btree (org_id, platform, account_id) WHERE (deleted_at IS NULL)',
    'the unique index is partial: only live rows (deleted_at IS NULL) must be unique');
SELECT is(
    (SELECT indexdef FROM pg_indexes
      WHERE schemaname = 'cmis' AND indexname = 'idx_platform_connections_lookup'),
    'CREATE INDEX idx_platform_connections_lookup ON cmis.platform_connections '
        'USING btree (org_id, platform, account_id, deleted_at)',
    'the lookup index covers every row, deleted ones included, ending in deleted_at');
SELECT isnt_empty(
    $$SELECT FROM pg_index
       WHERE indexrelid = 'cmis.idx_platform_connections_unique'::regclass
         AND indisvalid AND indisready AND indimmediate$$,
    'the unique index is valid and not deferrable (ON CONFLICT can use it as an arbiter)');
SELECT is_empty(
    $$SELECT FROM pg_constraint
       WHERE conrelid = 'cmis.platform_connections'::regclass AND contype = 'u'$$,
    'no full unique constraint on the key is left (it made reconnects fail)');

-- Two deleted rows and one live row of one key fit; a second live row does not.
INSERT INTO cmis.orgs (org_id, name) VALUES ('00000000-0000-4000-8000-0000000000a1', 'schema test');
SELECT lives_ok(
    $$INSERT INTO cmis.platform_connections (org_id, platform, account_id, deleted_at)
      VALUES ('00000000-0000-4000-8000-0000000000a1', 'meta', 'act_1', now() - interval '2 days'),
             ('00000000-0000-4000-8000-0000000000a1', 'meta', 'act_1', now() - interval '1 day'),
             ('00000000-0000-4000-8000-0000000000a1', 'meta', 'act_1', NULL)$$,
    'one key can hold several deleted rows beside its live row');
SELECT throws_ok(
    $$INSERT INTO cmis.platform_connections (org_id, platform, account_id)
      VALUES ('00000000-0000-4000-8000-0000000000a1', 'meta', 'act_1')$$,
    '23505', NULL,
    'a second live row for one key violates idx_platform_connections_unique (23505)');

SELECT * FROM finish();
ROLLBACK;
