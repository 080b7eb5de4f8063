-- Statements of bench/bulk.py.

-- name: create_org
INSERT INTO cmis.orgs (org_id, name) VALUES (%(org_id)s, 'bulk bench');

-- name: seed_keys
-- The org's starting state: keys 1..live+deleted exist, the last `deleted`
-- of them soft-deleted (after a live spell, so each also has its row).
INSERT INTO cmis.platform_connections (org_id, platform, account_id, access_token, deleted_at)
SELECT %(org_id)s, 'meta', 'acct_' || n, 'old-token',
       CASE WHEN n > %(live)s::int THEN now() - interval '1 day' END
  FROM generate_series(1, %(live)s::int + %(deleted)s::int) AS n;

-- name: analyze
ANALYZE cmis.platform_connections;

-- name: bulk
SELECT outcome, connection_id FROM cmis.upsert_platform_connections(%(org_id)s, %(rows)s);

-- name: single
SELECT outcome, connection_id
  FROM cmis.upsert_platform_connection(p_org_id => %(org_id)s, p_platform => %(platform)s,
                                       p_account_id => %(account_id)s,
                                       p_access_token => %(access_token)s);

-- name: bare_set_based
-- The cheapest set-based statement: no restore, no checks, no locks.
INSERT INTO cmis.platform_connections AS c (org_id, platform, account_id, access_token)
SELECT %(org_id)s, r.platform, r.account_id, r.access_token
  FROM jsonb_to_recordset(%(rows)s) AS r (platform text, account_id text, access_token text)
ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL
DO UPDATE SET access_token = COALESCE(EXCLUDED.access_token, c.access_token), updated_at = now()
RETURNING c.connection_id;

