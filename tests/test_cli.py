"""The command line: the main job on a fresh database, and a clear message when none answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pgbouncer import pgbouncer

CLI = str(Path(sys.executable).parent / "cmis-repo")


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_run_migrates_then_plays_the_reconnect_story(blank_database):
    first = run_cli("run", database_url=blank_database)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("applied 4 migration(s)")
    story = [line.split()[:3] for line in lines if "->" in line]
    assert story == [
        ["connect", "->", "created"],
        ["disconnect", "->", "deleted"],
        ["reconnect", "->", "restored"],
    ]
    assert "same connection_id after reconnect: yes" in first.stdout

    again = run_cli("run", database_url=blank_database)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("schema up to date")


def test_demo_keep_commits_its_rows(blank_database):
    assert run_cli("migrate", database_url=blank_database).returncode == 0
    kept = run_cli("demo", "--keep", database_url=blank_database)
    assert kept.returncode == 0, kept.stderr
    assert "kept: org" in kept.stdout


def test_unreachable_database_gives_a_message_not_a_traceback():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("run", database_url=f"postgresql://nobody:s3cret@127.0.0.1:{port}/nowhere")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot connect to PostgreSQL" in result.stderr
    assert "DATABASE_URL" in result.stderr
    assert "s3cret" not in result.stderr  # the password is masked


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://me:s3cret@127.0.0.1:notaport/db",
        "host=127.0.0.1 password=s3cret nonsense",
        "host=127.0.0.1 password=s3 cret",
    ],
    ids=["bad-port", "no-equals", "split-password"],
)
def test_a_malformed_database_url_is_one_line(url):
    line = _one_line_error(run_cli("demo", database_url=url))
    assert "DATABASE_URL is malformed" in line
    assert "s3cret" not in line
    assert "cret" not in line


def test_demo_on_a_database_never_migrated_says_to_migrate(blank_database):
    line = _one_line_error(run_cli("demo", database_url=blank_database))
    assert "run `cmis-repo migrate` first" in line


def test_a_missing_role_or_database_is_named(server):
    host, port = server["host"], server["port"]
    line = _one_line_error(
        run_cli("demo", database_url=f"postgresql://nobody_here@{host}:{port}/x")
    )
    assert "no role nobody_here" in line
    assert "Start the server" not in line
    line = _one_line_error(
        run_cli("demo", database_url=f"postgresql://{server['user']}@{host}:{port}/no_such_db")
    )
    assert "no database no_such_db" in line


def test_a_refused_password_says_so(pg_server):
    """A server that checks passwords: pgbouncer asking one role for its password."""
    with pgbouncer(
        pg_server.host,
        pg_server.port,
        pg_server.user,
        pool_size=1,
        passwords={"cmis_pw_user": "right-one"},
        hba=f"host all {pg_server.user} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 password\n",
    ) as bouncer:
        url = f"postgresql://cmis_pw_user:wrong-one@127.0.0.1:{bouncer.port}/postgres"
        line = _one_line_error(run_cli("demo", database_url=url))
    assert "password was refused" in line
    assert "wrong-one" not in line
