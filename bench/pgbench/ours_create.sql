-- Create path, cmis-repo: a key never used before. Each client counts its
-- transactions in i; base (-D, new for every run) keeps runs apart.
-- Variables: orgs, base, i = 0 (-D); at most 64 clients.
\set i :i + 1
\set n :base + :i * 64 + :client_id
\set o :n % :orgs
\set p :n % 4 + 1
SELECT *
  FROM cmis.upsert_platform_connection(
         p_org_id => md5('org' || :o)::uuid,
         p_platform => (ARRAY['meta', 'google', 'tiktok', 'linkedin'])[:p],
         p_account_id => 'acct_' || :n,
         p_account_name => 'Account ' || :n,
         p_access_token => repeat('b', 200));
