-- Statements of bench/function_profile.py.

-- name: install_plprofiler
-- plprofiler's own C functions, declared in the scratch database only: not
-- CREATE EXTENSION plprofiler, which makes a server-wide role.
CREATE SCHEMA plprof;
CREATE FUNCTION plprof.set_enabled_local(bool) RETURNS bool
    AS '$libdir/plprofiler', 'pl_profiler_set_enabled_local' LANGUAGE C STRICT;
CREATE FUNCTION plprof.reset_local() RETURNS void
    AS '$libdir/plprofiler', 'pl_profiler_reset_local' LANGUAGE C;
CREATE FUNCTION plprof.linestats_local(
        OUT func_oid oid, OUT line_number int8, OUT exec_count int8, OUT total_time int8,
        OUT longest_time int8)
    RETURNS SETOF record AS '$libdir/plprofiler', 'pl_profiler_linestats_local' LANGUAGE C STRICT;

-- name: load_plprofiler
LOAD 'plprofiler';

-- name: enable_plprofiler
SELECT plprof.set_enabled_local(true);

-- name: reset_plprofiler
SELECT plprof.reset_local();

-- name: linestats
-- Per line of the function's source (line 0: the whole call): executions and
-- microseconds, summed over the calls since the last reset.
SELECT s.line_number, s.exec_count, s.total_time
  FROM plprof.linestats_local() AS s
 WHERE s.func_oid = %(function)s::pg_catalog.regproc AND s.exec_count > 0
 ORDER BY s.line_number;

-- name: source
SELECT p.prosrc FROM pg_catalog.pg_proc AS p WHERE p.oid = %(function)s::pg_catalog.regproc;

-- name: track_functions
SET track_functions = 'all';

-- name: flush_stats
SELECT pg_catalog.pg_stat_force_next_flush();

-- name: function_stats
-- Calls and milliseconds (total, and self: without the functions it called)
-- of every function in schema cmis, as counted so far.
SELECT f.schemaname || '.' || f.funcname AS function, f.calls, f.total_time, f.self_time
  FROM pg_catalog.pg_stat_user_functions AS f
 WHERE f.schemaname = 'cmis';

-- name: select1
SELECT 1;

-- name: call
SELECT *
  FROM {function}(
         p_org_id => %(org_id)s,
         p_platform => %(platform)s,
         p_account_id => %(account_id)s,
         p_account_name => %(account_name)s,
         p_access_token => %(access_token)s);
