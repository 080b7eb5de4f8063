"""The command line: the main job on a fresh database, and a clear message when none answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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
