#!/usr/bin/env bash
# Run plpgsql_check over every PL/pgSQL function of a freshly migrated scratch
# database; fail on any error or warning. Needs postgresql-15-plpgsql-check.
# The server is libpq's default one (PGHOST, PGPORT, PGUSER), or $CHECK_ADMIN_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
admin=${CHECK_ADMIN_URL:-}
db="cmis_plpgsql_check_$$"

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 ${admin:+"$admin"} "$@"; }
psql_admin -d postgres -c "CREATE DATABASE $db" >/dev/null 2>&1 \
    || psql_admin -c "CREATE DATABASE $db"
trap 'psql_admin -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true' EXIT

url=$("$venv/bin/python" -c 'import sys
from cmis_repo.database import conninfo_from_env, with_dbname
print(with_dbname(conninfo_from_env(), sys.argv[1]))' "$db")
DATABASE_URL="$url" "$venv/bin/cmis-repo" migrate >/dev/null
findings=$(psql -X -q -v ON_ERROR_STOP=1 -At -F ' | ' "$url" -f scripts/plpgsql_check.sql)
functions=$(psql -X -At "$url" -c "SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
    WHERE l.lanname = 'plpgsql' AND p.pronamespace = 'cmis'::regnamespace")
if [ -n "$findings" ]; then
    echo "plpgsql_check: findings in $functions PL/pgSQL function(s):"
    echo "$findings"
    exit 1
fi
echo "plpgsql_check: $functions PL/pgSQL function(s), no errors or warnings"
