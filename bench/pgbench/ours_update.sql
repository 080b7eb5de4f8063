-- Update path, cmis-repo: a live key of the seeded data (bench/dataset.sql:
-- n % 10 >= 3 is live). Variables: keys, orgs (-D).
\set n random(0, :keys / 10 - 1) * 10 + random(3, 9)
\set o :n % :orgs
\set p :n % 4 + 1
SELECT *
  FROM cmis.upsert_platform_connection(
         p_org_id => md5('org' || :o)::uuid,
         p_platform => (ARRAY['meta', 'google', 'tiktok', 'linkedin'])[:p],
         p_account_id => 'acct_' || :n,
         p_account_name => 'Account ' || :n,
         p_access_token => repeat('b', 200));
