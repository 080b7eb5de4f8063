-- Statements of bench/python_paths.py.
--
-- The ORM pattern: what a Laravel developer writes by hand today to make
-- "update or create" restore soft-deleted rows, as the SQL Eloquent sends,
-- inside DB::transaction (BEGIN ... COMMIT):
--
--   $c = PlatformConnection::withTrashed()->where(key)->orderBy(live first, newest deleted)->first();
--   if ($c) { if ($c->trashed()) $c->restore(); $c->update($fields); }
--   else PlatformConnection::create($key + $fields);
--
-- i.e. orm_find_with_trashed, then [orm_restore,] orm_update, or orm_insert.
-- The look-up is the careful one (a live row first, else the newest deleted
-- one), an index scan on idx_platform_connections_lookup; the writes go by
-- primary key or through the partial unique index.

-- name: orm_find_with_trashed
SELECT connection_id, deleted_at, org_id, platform, account_id, account_name, status,
       access_token, refresh_token, token_expires_at, scopes, account_metadata, last_sync_at,
       last_error_at, last_error_message, auto_sync, sync_frequency_minutes, created_at,
       updated_at
  FROM cmis.platform_connections
 WHERE org_id = %(org_id)s AND platform = %(platform)s AND account_id = %(account_id)s
 ORDER BY deleted_at DESC NULLS FIRST
 LIMIT 1;

-- name: orm_restore
-- $model->restore(): deleted_at = NULL and a new updated_at, by primary key.
UPDATE cmis.platform_connections
   SET deleted_at = NULL, updated_at = now()
 WHERE connection_id = %(connection_id)s;

-- name: orm_update
-- $model->update($fields), by primary key. RETURNING deleted_at (one column)
-- lets the hot-key test see a connect that wrote a row a concurrent
-- disconnect had just deleted (a lost reconnect).
UPDATE cmis.platform_connections
   SET account_name = %(account_name)s, status = 'active', access_token = %(access_token)s,
       refresh_token = %(refresh_token)s, token_expires_at = %(token_expires_at)s,
       scopes = %(scopes)s, updated_at = now()
 WHERE connection_id = %(connection_id)s
RETURNING deleted_at;

-- name: orm_insert
-- PlatformConnection::create(...): the uuid is made client-side (HasUuids).
INSERT INTO cmis.platform_connections
       (connection_id, org_id, platform, account_id, account_name, status, access_token,
        refresh_token, token_expires_at, scopes, created_at, updated_at)
VALUES (%(connection_id)s, %(org_id)s, %(platform)s, %(account_id)s, %(account_name)s, 'active',
        %(access_token)s, %(refresh_token)s, %(token_expires_at)s, %(scopes)s, now(), now());

-- name: orm_soft_delete
-- Disconnect through the query builder: PlatformConnection::where(key)->delete()
-- on a SoftDeletes model is this one UPDATE (the scope adds deleted_at IS NULL).
UPDATE cmis.platform_connections
   SET deleted_at = now(), updated_at = now()
 WHERE org_id = %(org_id)s AND platform = %(platform)s AND account_id = %(account_id)s
   AND deleted_at IS NULL;

-- name: key_counts
-- Per key (in input order): rows, live rows, and rows created since %(since)s.
SELECT k.ord,
       count(c.connection_id) AS rows,
       count(c.connection_id) FILTER (WHERE c.deleted_at IS NULL) AS live,
       count(c.connection_id) FILTER (WHERE c.created_at >= %(since)s::timestamptz) AS created
  FROM unnest(%(org_ids)s::uuid[], %(platforms)s::text[], %(account_ids)s::text[])
       WITH ORDINALITY AS k (org_id, platform, account_id, ord)
  LEFT JOIN cmis.platform_connections AS c
         ON c.org_id = k.org_id AND c.platform = k.platform AND c.account_id = k.account_id
 GROUP BY k.ord
 ORDER BY k.ord;

-- name: now
SELECT clock_timestamp();

-- name: analyze
ANALYZE cmis.platform_connections;

-- name: set_synchronous_commit
SELECT set_config('synchronous_commit', %(value)s, false);

-- name: select_1
SELECT 1;

-- name: commit_flush
-- A transactional WAL record (no table touched): the commit must flush WAL.
SELECT pg_logical_emit_message(true, 'cmis-bench', '');

-- name: bare_upsert
-- Not a design (it never restores): the cheapest one-statement write of a key,
-- the floor any one-call upsert is measured against.
INSERT INTO cmis.platform_connections AS c
       (org_id, platform, account_id, account_name, status, access_token, refresh_token,
        token_expires_at, scopes, created_at, updated_at)
VALUES (%(org_id)s, %(platform)s, %(account_id)s, %(account_name)s, 'active', %(access_token)s,
        %(refresh_token)s, %(token_expires_at)s, %(scopes)s, now(), now())
    ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL
    DO UPDATE SET account_name = EXCLUDED.account_name, status = EXCLUDED.status,
                  access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token,
                  token_expires_at = EXCLUDED.token_expires_at, scopes = EXCLUDED.scopes,
                  updated_at = EXCLUDED.updated_at
RETURNING *;
