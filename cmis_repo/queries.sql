-- Statements the Python layer runs. Writes go through the PL/pgSQL functions
-- in sql/procedures/; reads are plain SQL. Arguments are named and
-- cast so that a changed Python type cannot pick another overload.
--
-- Each statement first sets app.current_org_id to the org it acts for, for the
-- rest of the transaction only (set_config(..., true)), so that row-level
-- security scopes it and a pooled connection never carries the org on to its
-- next user. An org the transaction already acts for is kept, never replaced:
-- a call for another org is then refused (42501) by the functions, and by
-- cmis.assert_platform_connection_org_scope for the reads. The setting rides
-- in the same statement, not in a round trip of its own: the call (or the
-- fenced subquery, OFFSET 0) depends on set_config's result through LATERAL,
-- so it can only run after it.
--
-- The caller's search_path is not ours to trust: functions, types and
-- operators are named with their schema (pg_catalog.set_config, ::pg_catalog.uuid,
-- OPERATOR(pg_catalog.=)), so that a look-alike earlier on the path is never
-- picked (tests/test_hardening.py).

-- name: upsert
SELECT u.*
  FROM pg_catalog.set_config('app.current_org_id', CASE
           WHEN pg_catalog.current_setting('app.current_org_id', true) OPERATOR(pg_catalog.<>) ''
           THEN pg_catalog.current_setting('app.current_org_id', true)
           ELSE %(org_id)s::pg_catalog.text END, true) AS scope (org_id)
 CROSS JOIN LATERAL cmis.upsert_platform_connection(
        p_org_id => CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END,
        p_platform => %(platform)s::pg_catalog.text,
        p_account_id => %(account_id)s::pg_catalog.text,
        p_account_name => %(account_name)s::pg_catalog.text,
        p_status => %(status)s::pg_catalog.text,
        p_access_token => %(access_token)s::pg_catalog.text,
        p_refresh_token => %(refresh_token)s::pg_catalog.text,
        p_token_expires_at => %(token_expires_at)s::pg_catalog.timestamptz,
        p_scopes => %(scopes)s::pg_catalog.jsonb,
        p_account_metadata => %(account_metadata)s::pg_catalog.jsonb,
        p_auto_sync => %(auto_sync)s::pg_catalog.bool,
        p_sync_frequency_minutes => %(sync_frequency_minutes)s::pg_catalog.int4) AS u;

-- name: upsert_many
SELECT m.*
  FROM pg_catalog.set_config('app.current_org_id', CASE
           WHEN pg_catalog.current_setting('app.current_org_id', true) OPERATOR(pg_catalog.<>) ''
           THEN pg_catalog.current_setting('app.current_org_id', true)
           ELSE %(org_id)s::pg_catalog.text END, true) AS scope (org_id)
 CROSS JOIN LATERAL cmis.upsert_platform_connections(
        p_org_id => CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END,
        p_rows => %(rows)s::pg_catalog.jsonb) AS m
 ORDER BY m.ord;

-- name: soft_delete
SELECT d.*
  FROM pg_catalog.set_config('app.current_org_id', CASE
           WHEN pg_catalog.current_setting('app.current_org_id', true) OPERATOR(pg_catalog.<>) ''
           THEN pg_catalog.current_setting('app.current_org_id', true)
           ELSE %(org_id)s::pg_catalog.text END, true) AS scope (org_id)
 CROSS JOIN LATERAL cmis.soft_delete_platform_connection(
        p_org_id => CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END,
        p_connection_id => %(connection_id)s::pg_catalog.uuid) AS d;

-- name: restore
SELECT r.*
  FROM pg_catalog.set_config('app.current_org_id', CASE
           WHEN pg_catalog.current_setting('app.current_org_id', true) OPERATOR(pg_catalog.<>) ''
           THEN pg_catalog.current_setting('app.current_org_id', true)
           ELSE %(org_id)s::pg_catalog.text END, true) AS scope (org_id)
 CROSS JOIN LATERAL cmis.restore_platform_connection(
        p_org_id => CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END,
        p_connection_id => %(connection_id)s::pg_catalog.uuid) AS r;

-- name: purge
SELECT p.purged
  FROM pg_catalog.set_config('app.current_org_id', CASE
           WHEN pg_catalog.current_setting('app.current_org_id', true) OPERATOR(pg_catalog.<>) ''
           THEN pg_catalog.current_setting('app.current_org_id', true)
           ELSE %(org_id)s::pg_catalog.text END, true) AS scope (org_id)
 CROSS JOIN LATERAL cmis.purge_platform_connections(
        p_org_id => CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END,
        p_older_than => %(older_than)s::pg_catalog.interval) AS p (purged);

-- name: get
SELECT c.*
  FROM pg_catalog.set_config('app.current_org_id', CASE
           WHEN pg_catalog.current_setting('app.current_org_id', true) OPERATOR(pg_catalog.<>) ''
           THEN pg_catalog.current_setting('app.current_org_id', true)
           ELSE %(org_id)s::pg_catalog.text END, true) AS scope (org_id)
 CROSS JOIN LATERAL cmis.assert_platform_connection_org_scope(
        CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END) AS checked
 CROSS JOIN LATERAL (
        SELECT * FROM cmis.platform_connections
         WHERE org_id OPERATOR(pg_catalog.=) CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END
           AND connection_id OPERATOR(pg_catalog.=) %(connection_id)s::pg_catalog.uuid
           AND (%(include_deleted)s::pg_catalog.bool OR deleted_at IS NULL)
        OFFSET 0) AS c;

-- name: list
SELECT c.*
  FROM pg_catalog.set_config('app.current_org_id', CASE
           WHEN pg_catalog.current_setting('app.current_org_id', true) OPERATOR(pg_catalog.<>) ''
           THEN pg_catalog.current_setting('app.current_org_id', true)
           ELSE %(org_id)s::pg_catalog.text END, true) AS scope (org_id)
 CROSS JOIN LATERAL cmis.assert_platform_connection_org_scope(
        CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END) AS checked
 CROSS JOIN LATERAL (
        SELECT * FROM cmis.platform_connections
         WHERE org_id OPERATOR(pg_catalog.=) CASE WHEN scope.org_id IS NOT NULL THEN %(org_id)s::pg_catalog.uuid END
           AND (%(platform)s::pg_catalog.text IS NULL
                OR platform::pg_catalog.text OPERATOR(pg_catalog.=) %(platform)s::pg_catalog.text)
           AND (%(include_deleted)s::pg_catalog.bool OR deleted_at IS NULL)
        OFFSET 0) AS c
 ORDER BY c.platform, c.account_id, c.deleted_at DESC NULLS FIRST, c.created_at;

-- name: procedure_overloads
SELECT p.oid::regprocedure::text AS signature
  FROM pg_proc AS p
 WHERE p.pronamespace = 'cmis'::regnamespace
   AND p.proname = ANY (%(names)s::text[])
 ORDER BY 1;

-- name: procedure_definitions
SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition,
       obj_description(p.oid, 'pg_proc') AS comment
  FROM pg_proc AS p
 WHERE p.pronamespace = 'cmis'::regnamespace
 ORDER BY 1;

-- name: grant_execute_to_app
SELECT format('GRANT EXECUTE ON FUNCTION %%s TO cmis_app', p.oid::regprocedure) AS grant_sql
  FROM pg_proc AS p
 WHERE p.pronamespace = 'cmis'::regnamespace
   AND p.proname = ANY (%(names)s::text[])
   AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'cmis_app');

-- name: ensure_demo_org
INSERT INTO cmis.orgs (org_id, name)
VALUES (%(org_id)s::uuid, 'cmis-repo demo')
ON CONFLICT (org_id) DO NOTHING;

-- name: rotation_disable_row_security
-- Key rotation (cmis_repo/rotation.py) must see every organisation's rows: with
-- row_security off, a role that policies would filter gets an error (42501)
-- instead of silently rotating one organisation's rows.
SET LOCAL row_security = off;

-- name: rotation_count_rows
SELECT count(*) FROM cmis.platform_connections;

-- name: rotation_first_batch
SELECT connection_id, access_token, refresh_token
  FROM cmis.platform_connections
 ORDER BY connection_id
 LIMIT %(batch_size)s::integer
   FOR UPDATE;

-- name: rotation_next_batch
SELECT connection_id, access_token, refresh_token
  FROM cmis.platform_connections
 WHERE connection_id > %(after)s::uuid
 ORDER BY connection_id
 LIMIT %(batch_size)s::integer
   FOR UPDATE;

-- name: rotation_update
-- A NULL new value keeps the stored one; updated_at is left alone (rotation
-- does not change the connection). The rows are locked by the batch's SELECT.
UPDATE cmis.platform_connections AS pc
   SET access_token = coalesce(rotated.access_token, pc.access_token),
       refresh_token = coalesce(rotated.refresh_token, pc.refresh_token)
  FROM unnest(%(connection_ids)s::uuid[], %(access_tokens)s::text[], %(refresh_tokens)s::text[])
       AS rotated (connection_id, access_token, refresh_token)
 WHERE pc.connection_id = rotated.connection_id;
