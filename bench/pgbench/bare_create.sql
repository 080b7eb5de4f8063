-- Create path, the bare statement: a key never used before. Each client counts
-- its transactions in i; base (-D, new for every run) keeps runs apart.
-- Variables: orgs, base, i = 0 (-D); at most 64 clients.
\set i :i + 1
\set n :base + :i * 64 + :client_id
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
