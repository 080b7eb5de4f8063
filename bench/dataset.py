"""The benchmarks' shared data set and throw-away databases.

``scratch_database(name)`` creates a database on the server ``$DATABASE_URL``
(or libpq's defaults) names, migrates it, and drops it afterwards.
``seed(conn, keys=..., orgs=...)`` fills it: ``keys`` connection keys over
``orgs`` organisations, 30 % of them soft-deleted, and for one key in fifty two
older deleted rows as well (see ``dataset.sql`` for how a key follows from a
number ``n``, which lets pgbench scripts draw keys at random).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import md5
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cmis_repo.database import connect, conninfo_from_env, with_dbname
from cmis_repo.migrate import migrate
from cmis_repo.queries import parse

SQL = parse(Path(__file__).with_name("dataset.sql").read_text("utf-8"))
PLATFORMS = ("meta", "google", "tiktok", "linkedin")


@dataclass(frozen=True)
class Key:
    org_id: uuid.UUID
    platform: str
    account_id: str


def key(n: int, orgs: int) -> Key:
    """The key of number ``n``, exactly as ``dataset.sql`` builds it."""
    # Not security: the same md5 as the SQL, to name a test org.
    org = uuid.UUID(md5(f"org{n % orgs}".encode(), usedforsecurity=False).hexdigest())
    return Key(org, PLATFORMS[n % 4], f"acct_{n}")


def is_deleted(n: int) -> bool:
    """Whether key ``n``'s row is soft-deleted in the seeded data."""
    return n % 10 < 3


@dataclass(frozen=True)
class Counts:
    rows: int
    deleted: int
    orgs: int


def seed(conn: psycopg.Connection[Any], *, keys: int = 100_000, orgs: int = 1_000) -> Counts:
    """Seed ``keys`` keys over ``orgs`` organisations; return what the table holds."""
    with conn.transaction():
        conn.execute(SQL["seed_orgs"], {"orgs": orgs})
        conn.execute(SQL["seed_connections"], {"orgs": orgs, "keys": keys})
    conn.execute(SQL["analyze"])
    row = conn.execute(SQL["counts"]).fetchone()
    assert row is not None
    return Counts(*row)


def _admin_statement(name: str, dbname: str) -> sql.Composed:
    return sql.SQL(SQL[name]).format(dbname=sql.Identifier(dbname))


@contextmanager
def scratch_database(dbname: str) -> Iterator[str]:
    """A new, migrated database named ``dbname``; its conninfo. Dropped afterwards."""
    admin = conninfo_from_env()
    with connect(admin, autocommit=True) as conn:
        conn.execute(_admin_statement("drop_database", dbname))
        conn.execute(_admin_statement("create_database", dbname))
    conninfo = with_dbname(admin, dbname)
    try:
        migrate(conninfo)
        yield conninfo
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(_admin_statement("drop_database", dbname))
