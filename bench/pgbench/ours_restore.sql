-- Restore path, cmis-repo: one transaction soft-deletes a live key's row with
-- a plain UPDATE (the same as bare_restore.sql), then reconnects the key. The
-- statements go in one pipeline: one round trip, as on the other paths.
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
SELECT *
  FROM cmis.upsert_platform_connection(
         p_org_id => md5('org' || :o)::uuid,
         p_platform => (ARRAY['meta', 'google', 'tiktok', 'linkedin'])[:p],
         p_account_id => 'acct_' || :n,
         p_account_name => 'Account ' || :n,
         p_access_token => repeat('b', 200));
COMMIT;
\endpipeline
