-- Statements the Python layer runs. Writes go through the PL/pgSQL functions
-- in sql/procedures/; reads and purges are plain SQL. Arguments are named and
-- cast so that a changed Python type cannot pick another overload.

-- name: upsert
SELECT *
  FROM cmis.upsert_platform_connection(
        p_org_id => %(org_id)s::uuid,
        p_platform => %(platform)s::text,
        p_account_id => %(account_id)s::text,
        p_account_name => %(account_name)s::text,
        p_status => %(status)s::text,
        p_access_token => %(access_token)s::text,
        p_refresh_token => %(refresh_token)s::text,
        p_token_expires_at => %(token_expires_at)s::timestamptz,
        p_scopes => %(scopes)s::jsonb,
        p_account_metadata => %(account_metadata)s::jsonb,
        p_auto_sync => %(auto_sync)s::boolean,
        p_sync_frequency_minutes => %(sync_frequency_minutes)s::integer);

-- name: soft_delete
SELECT *
  FROM cmis.soft_delete_platform_connection(
        p_org_id => %(org_id)s::uuid, p_connection_id => %(connection_id)s::uuid);

-- name: restore
SELECT *
  FROM cmis.restore_platform_connection(
        p_org_id => %(org_id)s::uuid, p_connection_id => %(connection_id)s::uuid);

-- name: get
SELECT *
  FROM cmis.platform_connections
 WHERE org_id = %(org_id)s::uuid
   AND connection_id = %(connection_id)s::uuid
   AND (%(include_deleted)s::boolean OR deleted_at IS NULL);

-- name: list
SELECT *
  FROM cmis.platform_connections
 WHERE org_id = %(org_id)s::uuid
   AND (%(platform)s::text IS NULL OR platform = %(platform)s::text)
   AND (%(include_deleted)s::boolean OR deleted_at IS NULL)
 ORDER BY platform, account_id, deleted_at DESC NULLS FIRST, created_at;

-- name: purge
DELETE FROM cmis.platform_connections
 WHERE org_id = %(org_id)s::uuid
   AND deleted_at < clock_timestamp() - %(older_than)s::interval;

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

-- name: ensure_demo_org
INSERT INTO cmis.orgs (org_id, name)
VALUES (%(org_id)s::uuid, 'cmis-repo demo')
ON CONFLICT (org_id) DO NOTHING;
