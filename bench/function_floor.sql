-- Statements of bench/function_floor.py (the pgbench scripts are in bench/pgbench/).

-- name: checkpoint
CHECKPOINT;

-- name: counts
-- What each pgbench script's self-check looks at: rows, and deleted rows.
SELECT count(*) AS rows, count(*) FILTER (WHERE deleted_at IS NOT NULL) AS deleted
  FROM cmis.platform_connections;

-- name: server
SELECT pg_catalog.version() AS version,
       pg_catalog.current_setting('synchronous_commit') AS synchronous_commit,
       pg_catalog.current_setting('shared_buffers') AS shared_buffers,
       pg_catalog.current_setting('wal_sync_method') AS wal_sync_method,
       pg_catalog.current_setting('max_wal_size') AS max_wal_size;

-- name: definitions
-- Which text of the functions was measured (they are edited concurrently).
SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text AS function,
       pg_catalog.md5(pg_catalog.pg_get_functiondef(p.oid)) AS md5
  FROM pg_catalog.pg_proc AS p
 WHERE p.pronamespace = 'cmis'::pg_catalog.regnamespace
 ORDER BY 1;

-- name: foreign_xacts
-- Transactions so far in the server's databases other than the benchmark's
-- own: other work that ran during a measurement (statistics reach it within a
-- second or so).
SELECT COALESCE(sum(d.xact_commit + d.xact_rollback), 0)
  FROM pg_catalog.pg_stat_database AS d
 WHERE d.datname <> ALL (%(ours)s::pg_catalog.text[]);
