-- Restore path, the bare statement: the same soft delete as ours_restore.sql,
-- then the bare INSERT ... ON CONFLICT, which cannot restore: it inserts a new
-- row for the key (the cheapest way to make the key live again).
\set n random(0, :keys / 10 - 1) * 10 + random(3, 9)
\set o :n % :orgs
\set p :n % 4 + 1
\startpipeline
BEGIN;
UPDATE cmis.platform_connections
   SET deleted_at = now(), updated_at = now()
 WHERE org_id = md5('org' || :o)::uuid
   AND platform = (ARRAY['meta', 'google', 'tiktok', 'linkedin'])[:p]
   AND account_id = 'acct_' || :n AND deleted_at IS NULL;
INSERT INTO cmis.platform_connections AS c
       (org_id, platform, account_id, account_name, status, access_token, created_at, updated_at)
VALUES (md5('org' || :o)::uuid, (ARRAY['meta', 'google', 'tiktok', 'linkedin'])[:p],
        'acct_' || :n, 'Account ' || :n, 'active', repeat('b', 200), now(), now())
    ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL
    DO UPDATE SET account_name = EXCLUDED.account_name, status = EXCLUDED.status,
                  access_token = EXCLUDED.access_token, updated_at = EXCLUDED.updated_at
RETURNING *;
COMMIT;
\endpipeline
