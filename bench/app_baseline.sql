-- The Laravel app's fixed controller, as the SQL it sends: look the key up
-- including deleted rows, then restore-and-update or insert. Two round trips,
-- and racy without a lock; the baseline cmis-repo is measured against.

-- name: find_any
SELECT connection_id, deleted_at
  FROM cmis.platform_connections
 WHERE org_id = %(org_id)s AND platform = %(platform)s AND account_id = %(account_id)s
 ORDER BY deleted_at DESC NULLS FIRST
 LIMIT 1;

-- name: update_by_id
UPDATE cmis.platform_connections
   SET deleted_at = NULL, status = 'active', access_token = %(access_token)s, updated_at = now()
 WHERE connection_id = %(connection_id)s;

-- name: insert
INSERT INTO cmis.platform_connections (org_id, platform, account_id, access_token)
VALUES (%(org_id)s, %(platform)s, %(account_id)s, %(access_token)s);

-- name: soft_delete
UPDATE cmis.platform_connections
   SET deleted_at = now(), updated_at = now()
 WHERE org_id = %(org_id)s AND platform = %(platform)s AND account_id = %(account_id)s
   AND deleted_at IS NULL;

-- name: create_database
CREATE DATABASE cmis_bench;

-- name: drop_database
DROP DATABASE IF EXISTS cmis_bench WITH (FORCE);

-- name: create_org
INSERT INTO cmis.orgs (org_id, name) VALUES (%(org_id)s, 'bench');

-- name: seed
-- Background rows so that look-ups go through real indexes.
INSERT INTO cmis.platform_connections (org_id, platform, account_id, deleted_at)
SELECT %(org_id)s, 'seed', 'acct_' || g, CASE WHEN g %% 3 = 0 THEN now() END
  FROM generate_series(1, %(rows)s) AS g;

-- name: analyze
ANALYZE cmis.platform_connections;
