-- Every finding of plpgsql_check on the PL/pgSQL functions of schema cmis,
-- all warning classes on. No output means clean.
CREATE EXTENSION IF NOT EXISTS plpgsql_check;

SELECT p.oid::regprocedure AS function, c.lineno, c.level, c.sqlstate, c.message, c.hint
  FROM pg_proc AS p
  JOIN pg_language AS l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
 CROSS JOIN LATERAL plpgsql_check_function_tb(
        p.oid,
        fatal_errors => false,
        other_warnings => true,
        performance_warnings => true,
        extra_warnings => true,
        security_warnings => true) AS c
 WHERE p.pronamespace = 'cmis'::regnamespace
 ORDER BY 1, 2;
