-- Statements of bench/growth.py: one call of the function, the bare statement
-- (for comparison), and the soft delete that precedes a restore (not timed).

-- name: upsert
SELECT *
  FROM cmis.upsert_platform_connection(
         p_org_id => %(org_id)s,
         p_platform => %(platform)s,
         p_account_id => %(account_id)s,
         p_account_name => %(account_name)s,
         p_access_token => %(access_token)s);

-- name: bare
INSERT INTO cmis.platform_connections AS c
       (org_id, platform, account_id, account_name, status, access_token, created_at, updated_at)
VALUES (%(org_id)s, %(platform)s, %(account_id)s, %(account_name)s, 'active', %(access_token)s,
        now(), now())
    ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL
    DO UPDATE SET account_name = EXCLUDED.account_name, status = EXCLUDED.status,
                  access_token = EXCLUDED.access_token, updated_at = EXCLUDED.updated_at
RETURNING *;

-- name: soft_delete
UPDATE cmis.platform_connections
   SET deleted_at = now(), updated_at = now()
 WHERE org_id = %(org_id)s AND platform = %(platform)s AND account_id = %(account_id)s
   AND deleted_at IS NULL;

-- name: table_size
SELECT pg_catalog.pg_total_relation_size('cmis.platform_connections');
