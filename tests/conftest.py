"""Test databases: a migrated template cloned per test, and blank databases.

Two ways to get a server, chosen by ``CMIS_TEST_POSTGRES``:

- ``noproc`` (the default when a server answers): use the running server at
  ``PGHOST``/``PGPORT``/``PGUSER`` (default ``127.0.0.1:5432``, ``postgres``).
- ``proc`` (the default when none answers): pytest-postgresql starts a
  throw-away server with ``pg_ctl`` (``CMIS_TEST_PG_CTL``, else found beside
  ``pg_config``). initdb refuses to run as root, so this is for non-root users.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from cmis_repo.migrate import migrate
from tests.support.orgs import make_org

ROOT = Path(__file__).resolve().parent.parent

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")


def _server_answers() -> bool:
    try:
        psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3
        ).close()
    except psycopg.OperationalError:
        return False
    return True


def _pg_ctl() -> str:
    explicit = os.environ.get("CMIS_TEST_PG_CTL")
    if explicit:
        return explicit
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if Path(bindir, "pg_ctl").exists():
            return str(Path(bindir, "pg_ctl"))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return found[-1]
    on_path = shutil.which("pg_ctl")
    if on_path:
        return on_path
    raise RuntimeError("CMIS_TEST_POSTGRES=proc needs pg_ctl: set CMIS_TEST_PG_CTL to its path")


MODE = os.environ.get("CMIS_TEST_POSTGRES") or ("noproc" if _server_answers() else "proc")
# Per run, so that two test runs against one server do not drop each other's databases.
DBNAME = f"cmis_tests_{os.getpid()}"


def load_schema(
    host: str, port: int, user: str, dbname: str, password: str | None, **_: Any
) -> None:
    """Build the template database exactly as users do: the migrate command."""
    migrate(
        make_conninfo(host=host, port=port, user=user, dbname=dbname, password=password or None)
    )


pg_server: Callable[..., Any]
if MODE == "proc":
    pg_server = factories.postgresql_proc(
        executable=_pg_ctl(),
        port=None,
        user="postgres",
        dbname=DBNAME,
        load=[load_schema],
    )
else:
    pg_server = factories.postgresql_noproc(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname=DBNAME,
        load=[load_schema],
    )

#: A connection (in a transaction, not autocommit) to a per-test clone of the migrated template.
db = factories.postgresql("pg_server")


@pytest.fixture
def conninfo(db: psycopg.Connection[Any]) -> str:
    """Conninfo of the per-test database, for more connections to it."""
    info = db.info
    return make_conninfo(
        host=info.host,
        port=info.port,
        user=info.user,
        dbname=info.dbname,
        password=info.password or None,
    )


@pytest.fixture
def connect(conninfo: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Open more connections to the per-test database; all are closed afterwards."""
    opened: list[psycopg.Connection[Any]] = []

    def open_connection(**kwargs: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(conninfo, **kwargs)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


@pytest.fixture
def server(pg_server: Any) -> dict[str, Any]:
    """host, port, user and password of the test server."""
    return {
        "host": pg_server.host,
        "port": pg_server.port,
        "user": pg_server.user,
        "password": pg_server.password or None,
    }


@pytest.fixture
def blank_database(server: dict[str, Any]) -> Iterator[str]:
    """Conninfo of a new, empty database (no migrations), dropped afterwards."""
    dbname = f"cmis_blank_{uuid.uuid4().hex[:12]}"
    with DatabaseJanitor(dbname=dbname, **server):
        yield make_conninfo(dbname=dbname, **{k: v for k, v in server.items() if v is not None})


@pytest.fixture(scope="session")
def app_login(pg_server: Any) -> Iterator[str]:
    """A login role like the application's: not a superuser, no BYPASSRLS, owns
    nothing, and holds only what it inherits from ``cmis_app`` (made by the
    migrations). Per run, since roles belong to the whole server."""
    role = f"cmis_test_app_{os.getpid()}"
    params = {"host": pg_server.host, "port": pg_server.port, "user": pg_server.user}
    admin = make_conninfo(dbname="postgres", password=pg_server.password or None, **params)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE cmis_app").format(
                sql.Identifier(role)
            )
        )
    yield role
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def connect_as_app(
    conninfo: str, app_login: str
) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Open connections to the per-test database as ``app_login``; closed afterwards."""
    opened: list[psycopg.Connection[Any]] = []

    def open_connection(**kwargs: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(conninfo, user=app_login, **kwargs)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


#: Backstops on every connection the concurrency tests open: nothing waits forever.
SESSION_OPTIONS = (
    "-c statement_timeout=20s -c lock_timeout=20s -c idle_in_transaction_session_timeout=60s"
)


@pytest.fixture
def session(
    connect: Callable[..., psycopg.Connection[Any]],
) -> Callable[..., psycopg.Connection[Any]]:
    """Open a connection with SESSION_OPTIONS' timeouts (closed by ``connect`` at teardown)."""

    def open_session(*, autocommit: bool = False) -> psycopg.Connection[Any]:
        return connect(autocommit=autocommit, options=SESSION_OPTIONS)

    return open_session


@pytest.fixture
def monitor(session: Callable[..., psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    """An autocommit connection for looking at pg_locks and at the table."""
    return session(autocommit=True)


@pytest.fixture
def other_org_id(db: psycopg.Connection[Any]) -> uuid.UUID:
    """A second organisation (committed)."""
    return make_org(db, "Globex")


@pytest.fixture
def org_id(db: psycopg.Connection[Any]) -> uuid.UUID:
    """An organisation in cmis.orgs (committed, so other connections see it)."""
    return make_org(db)
