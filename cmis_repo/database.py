"""Where the database is: ``DATABASE_URL``, else libpq's defaults.

``DATABASE_URL`` may be a ``postgresql://`` or ``postgresql+psycopg://`` URL
(the second is yoyo's spelling) or a libpq keyword string.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import psycopg

_YOYO_SCHEMES = ("postgresql+psycopg://", "postgres+psycopg://")


class DatabaseUnreachable(Exception):
    """The server could not be reached; the message says how to fix it."""


def conninfo_from_env(database_url: str | None = None) -> str:
    """The libpq conninfo for ``database_url``, else ``$DATABASE_URL``, else libpq defaults."""
    url = database_url if database_url is not None else os.environ.get("DATABASE_URL", "")
    for scheme in _YOYO_SCHEMES:
        if url.startswith(scheme):
            return "postgresql://" + url[len(scheme) :]
    return url


def with_dbname(conninfo: str, dbname: str) -> str:
    """The same server and credentials as ``conninfo``, another database."""
    params = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(conninfo).items()}
    return psycopg.conninfo.make_conninfo(**{**params, "dbname": dbname})


def describe(conninfo: str) -> str:
    """A conninfo for messages: the password masked, libpq defaults named."""
    if not conninfo:
        return "the local server (libpq defaults: PGHOST, PGPORT, PGUSER, PGDATABASE)"
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - masking, not a password
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


def connect(conninfo: str, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    """Connect, or raise :class:`DatabaseUnreachable` with a message saying how to fix it.

    Statements are never prepared (``prepare_threshold=None``), so that the
    commands work behind PgBouncer in transaction mode.
    """
    kwargs.setdefault("prepare_threshold", None)
    try:
        return psycopg.connect(conninfo, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DatabaseUnreachable(
            f"cannot connect to PostgreSQL at {describe(conninfo)}: {reason}\n"
            "Start the server (for example: pg_ctlcluster 15 main start), or point DATABASE_URL "
            "at one, e.g. DATABASE_URL=postgresql://user@localhost:5432/dbname"
        ) from None


@dataclass(frozen=True)
class ConnectionTarget:
    """Where an open connection went, to hand the same server to yoyo."""

    user: str
    password: str | None
    host: str
    port: int
    dbname: str

    @classmethod
    def of(cls, conn: psycopg.Connection[Any]) -> ConnectionTarget:
        info = conn.info
        return cls(info.user, info.password or None, info.host, info.port, info.dbname)

    def yoyo_uri(self) -> str:
        """A ``postgresql+psycopg://`` URI; a socket directory goes in ``?host=``."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        query = urlencode({"host": self.host, "port": self.port})
        return f"postgresql+psycopg://{auth}@/{quote(self.dbname, safe='')}?{query}"
