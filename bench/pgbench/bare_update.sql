-- Update path, the bare statement: a live key of the seeded data
-- (bench/dataset.sql: n % 10 >= 3 is live). Variables: keys, orgs (-D).
\set n random(0, :keys / 10 - 1) * 10 + random(3, 9)
\set o :n % :orgs
\set p :n % 4 + 1
INSERT INTO cmis.platform_connections AS c
       (org_id, platform, account_id, account_name, status, access_token, created_at, updated_at)
VALUES (md5('org' || :o)::uuid, (ARRAY['meta', 'google', 'tiktok', 'linkedin'])[:p],
        'acct_' || :n, 'Account ' || :n, 'active', repeat('b', 200), now(), now())
    ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL
    DO UPDATE SET account_name = EXCLUDED.account_name, status = EXCLUDED.status,
                  access_token = EXCLUDED.access_token, updated_at = EXCLUDED.updated_at
RETURNING *;
