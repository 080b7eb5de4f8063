#!/usr/bin/env bash
# Install the Debian packages the tests and checks need, if any is missing:
# PostgreSQL 15 with pgTAP (SQL-level tests) and plpgsql_check (lint of the
# PL/pgSQL functions), php-cli (Laravel's token format, both ways) and
# pgbouncer (tests behind a transaction pooler). Installs nothing when all are present.
set -euo pipefail
packages=(postgresql-15 postgresql-client-15 postgresql-15-pgtap postgresql-15-plpgsql-check php-cli pgbouncer)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
    command -v sudo >/dev/null || {
        echo "missing Debian packages: ${missing[*]}; install them as root:" >&2
        echo "  apt-get install -y ${missing[*]}" >&2
        exit 1
    }
else
    sudo=
fi
echo "installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
