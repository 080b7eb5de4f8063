"""A real PgBouncer, started by a test in front of the test server.

Debian's ``pgbouncer`` (1.18 on bookworm) has no prepared-statement support:
in transaction mode a client's statements run on whichever server
connection is free, so anything a client leaves on a server connection
(prepared statements, session settings) is met by other clients.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

#: The application_name of pgbouncer's server connections, to find them in pg_stat_activity.
APPLICATION_NAME = "cmis-pgbouncer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """A running pgbouncer: ``conninfo(dbname)`` reaches a database through it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, user: str, workdir: Path):
        self.process = process
        self.port = port
        self.user = user
        self.workdir = workdir

    def conninfo(self, dbname: str, **params: Any) -> str:
        return make_conninfo(
            host="127.0.0.1", port=self.port, user=self.user, dbname=dbname, **params
        )

    def admin(self, command: str) -> list[tuple[Any, ...]]:
        """Run a command of pgbouncer's admin console (``SHOW POOLS``, ``RECONNECT``)."""
        # The admin console speaks only the simple query protocol.
        with psycopg.connect(self.conninfo("pgbouncer"), autocommit=True) as conn:
            cur = conn.cursor()
            cur.execute(command, prepare=False)
            return cur.fetchall() if cur.description else []

    def log(self) -> str:
        return (self.workdir / "pgbouncer.log").read_text(errors="replace")


@contextmanager
def pgbouncer(
    server_host: str,
    server_port: int,
    user: str,
    *,
    pool_size: int,
    databases: tuple[str, ...] = (),
    pool_mode: str = "transaction",
    settings: Mapping[str, object] | None = None,
    passwords: Mapping[str, str] | None = None,
    hba: str | None = None,
) -> Iterator[PgBouncer]:
    """Start pgbouncer for every database of the server; stop it afterwards.

    As root it runs as ``postgres`` (pgbouncer refuses to run as root).
    Name the ``databases`` that clients will use: a database pgbouncer 1.18
    registers on the fly ("auto-database") while several clients log in at
    once may send the server an invalid startup packet.
    """
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise RuntimeError("pgbouncer is not installed: scripts/install-system-deps.sh installs it")
    workdir = Path(tempfile.mkdtemp(prefix="cmis-pgbouncer-"))
    run_as = "postgres" if os.geteuid() == 0 else None
    port = free_port()
    options = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": workdir / "userlist.txt",
        "admin_users": user,
        "pool_mode": pool_mode,
        "default_pool_size": pool_size,
        "min_pool_size": 0,
        "reserve_pool_size": 0,
        "max_client_conn": 500,
        "server_reset_query": "DISCARD ALL",
        "ignore_startup_parameters": "extra_float_digits,options",
        "logfile": workdir / "pgbouncer.log",
        "pidfile": workdir / "pgbouncer.pid",
        # A killed login is tried again at once, and no client waits for
        # long: a test fails rather than hangs.
        "server_login_retry": 1,
        "query_wait_timeout": 30,
        "log_connections": 0,
        "log_disconnections": 0,
        **(settings or {}),
    }
    if hba is not None:  # pg_hba.conf lines: who must give a password
        (workdir / "hba.conf").write_text(hba)
        options.update(auth_type="hba", auth_hba_file=workdir / "hba.conf")
    target = f"host={server_host} port={server_port} application_name={APPLICATION_NAME}"
    lines = ["[databases]", *(f"{name} = {target} dbname={name}" for name in databases)]
    lines += [f"* = {target}", "", "[pgbouncer]"]
    lines += [f"{name} = {value}" for name, value in options.items()]
    (workdir / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
    users = {user: "", **(passwords or {})}
    (workdir / "userlist.txt").write_text(
        "".join(f'"{name}" "{password}"\n' for name, password in users.items())
    )
    if run_as is not None:
        owner = pwd.getpwnam(run_as)
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    command = [binary, *(["-u", run_as] if run_as else []), str(workdir / "pgbouncer.ini")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bouncer = PgBouncer(process, port, user, workdir)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                bouncer.admin("SHOW VERSION")
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read().decode() if process.stderr else ""
                    message = f"pgbouncer did not start: {stderr}\n{bouncer.log()}"
                    raise RuntimeError(message) from None
                time.sleep(0.05)  # waiting for a process to listen, not for an interleaving
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)
