-- Statements of bench/rotate_keys.py. The scratch database's name is fixed
-- here and in the script (DBNAME).

-- name: drop_database
DROP DATABASE IF EXISTS cmis_bench_rotate_keys WITH (FORCE);

-- name: create_database
CREATE DATABASE cmis_bench_rotate_keys;

-- name: copy_orgs
COPY cmis.orgs (org_id, name) FROM STDIN;

-- name: copy_connections
COPY cmis.platform_connections
     (connection_id, org_id, platform, account_id, access_token, refresh_token, deleted_at)
FROM STDIN;

-- name: analyze
ANALYZE cmis.platform_connections;

-- name: sample
SELECT access_token, refresh_token FROM cmis.platform_connections TABLESAMPLE SYSTEM (1);
