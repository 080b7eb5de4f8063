#!/usr/bin/env bash
# Start the local PostgreSQL cluster if it does not answer. For CI and fresh
# machines; a server you run yourself is left alone.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p "${PGPORT:-5432}"; then
    exit 0
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version (cluster main)"
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "${PGPORT:-5432}" && exit 0
    sleep 1
done
echo "PostgreSQL $version did not start; see /var/log/postgresql/" >&2
exit 1
