-- The benchmarks' data set (bench/dataset.py). Keys are computable from a
-- number n, so that pgbench scripts can draw them at random:
--   org        = md5('org' || (n % orgs))::uuid
--   platform   = (ARRAY['meta','google','tiktok','linkedin'])[n % 4 + 1]
--   account_id = 'acct_' || n
-- n % 10 in (0, 1, 2): the key's row is soft-deleted (30 %); n % 50 = 0 (a
-- fifth of those): the key also has two older deleted rows (history).

-- name: create_database
CREATE DATABASE {dbname};

-- name: drop_database
DROP DATABASE IF EXISTS {dbname} WITH (FORCE);

-- name: seed_orgs
INSERT INTO cmis.orgs (org_id, name)
SELECT md5('org' || o)::uuid, 'bench org ' || o FROM generate_series(0, %(orgs)s - 1) AS o;

-- name: seed_connections
INSERT INTO cmis.platform_connections
       (org_id, platform, account_id, account_name, status, access_token, refresh_token,
        scopes, account_metadata, created_at, updated_at, deleted_at)
SELECT md5('org' || (n %% %(orgs)s))::uuid,
       (ARRAY['meta', 'google', 'tiktok', 'linkedin'])[n %% 4 + 1],
       'acct_' || n, 'Account ' || n, 'active',
       repeat('a', 180), repeat('r', 180), '["ads_read"]'::jsonb, '{"currency": "EUR"}'::jsonb,
       now() - interval '400 days', now() - interval '1 day',
       CASE WHEN n %% 10 < 3 THEN now() - n * interval '1 second' END
  FROM generate_series(1, %(keys)s) AS n
UNION ALL
SELECT md5('org' || (n %% %(orgs)s))::uuid,
       (ARRAY['meta', 'google', 'tiktok', 'linkedin'])[n %% 4 + 1],
       'acct_' || n, 'Account ' || n || ' (old)', 'revoked',
       repeat('a', 180), repeat('r', 180), NULL::jsonb, NULL::jsonb,
       now() - interval '800 days', now() - interval '500 days',
       now() - interval '500 days' - h * interval '1 day'
  FROM generate_series(1, %(keys)s) AS n, generate_series(1, 2) AS h
 WHERE n %% 50 = 0;

-- name: analyze
ANALYZE cmis.orgs, cmis.platform_connections;

-- name: counts
SELECT count(*) AS rows, count(*) FILTER (WHERE deleted_at IS NOT NULL) AS deleted,
       count(DISTINCT org_id) AS orgs
  FROM cmis.platform_connections;
