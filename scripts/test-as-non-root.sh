#!/usr/bin/env bash
# Run the test suite as an unprivileged user against a throw-away server that
# pytest-postgresql starts with pg_ctl (CMIS_TEST_POSTGRES=proc): the set-up a
# developer without a running server or root has. initdb refuses to run as
# root, so as root this creates the user cmis-tests and runs as that user on
# a copy of the tree. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
user=${CMIS_TEST_USER:-cmis-tests}

if [ "$(id -u)" -ne 0 ]; then
    exec env CMIS_TEST_POSTGRES=proc "${VENV:-.venv}/bin/pytest" -p no:cacheprovider "$@"
fi

id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | xargs -0 cp --parents -t "$work"
chown -R "$user" "$work"
runuser -u "$user" -- bash -c '
    set -euo pipefail
    cd "$1"; shift
    python3 -m venv .venv
    .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
    exec env CMIS_TEST_POSTGRES=proc .venv/bin/pytest -p no:cacheprovider "$@"
' bash "$work" "$@"
