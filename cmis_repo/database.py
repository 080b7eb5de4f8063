"""Where the database is: ``DATABASE_URL``, else libpq's defaults.

``DATABASE_URL`` may be a ``postgresql://`` or ``postgresql+psycopg://`` URL
(the second is yoyo's spelling) or a libpq keyword string.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import psycopg

from cmis_repo.errors import DatabaseUnreachableError

_YOYO_SCHEMES = ("postgresql+psycopg://", "postgres+psycopg://")


#: The name this error had up to 0.1.0.
DatabaseUnreachable = DatabaseUnreachableError


#: What the server (or libpq) said, and what to do about it, in the order tried.
_CONNECT_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r'role "(?P<name>[^"]*)" does not exist'),
        "the server has no role {name}: create it (CREATE ROLE {name} LOGIN) or set the user"
        " in DATABASE_URL",
    ),
    (
        re.compile(r'database "(?P<name>[^"]*)" does not exist'),
        "the server has no database {name}: create it (createdb {name}) or name another in"
        " DATABASE_URL",
    ),
    (
        re.compile(r"password authentication failed|no password supplied|password is wrong"),
        "the password was refused: check the password in DATABASE_URL (or PGPASSWORD, ~/.pgpass)",
    ),
    (
        re.compile(
            r"Connection refused|No such file or directory|timeout expired|could not"
            r" translate host name|Is the server running"
        ),
        "nothing answers there: start the server (for example: pg_ctlcluster 15 main start)"
        " or point DATABASE_URL at one, e.g. postgresql://user@localhost:5432/dbname",
    ),
)


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
    """Connect, or raise :class:`~cmis_repo.DatabaseUnreachableError` saying how to fix it.

    Statements are never prepared (``prepare_threshold=None``), so that the
    commands work behind PgBouncer in transaction mode.
    """
    kwargs.setdefault("prepare_threshold", None)
    try:
        where = describe(conninfo)
    except psycopg.ProgrammingError as error:
        raise DatabaseUnreachableError(_malformed(error)) from None
    try:
        return psycopg.connect(conninfo, **kwargs)  # type: ignore[arg-type]
    except psycopg.ProgrammingError as error:
        raise DatabaseUnreachableError(_malformed(error)) from None
    except psycopg.OperationalError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        if "invalid" in reason and "connection option" in reason:
            raise DatabaseUnreachableError(_malformed(error)) from None
        advice = next(
            (
                text.format(**found.groupdict())
                for pattern, text in _CONNECT_FAILURES
                if (found := pattern.search(reason))
            ),
            "check DATABASE_URL (or PGHOST, PGPORT, PGUSER, PGDATABASE)",
        )
        raise DatabaseUnreachableError(
            f"cannot connect to PostgreSQL at {where}: {advice} ({reason})"
        ) from None


#: Words of a conninfo that libpq may quote back in its error, safe to show.
_OPTION_NAMES = frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults()) | {"="}


def _malformed(error: psycopg.Error) -> str:
    # libpq quotes the part it could not read, which may be a password: show
    # only quoted option names.
    reason = re.sub(
        r'"([^"]*)"',
        lambda quoted: quoted.group(0) if quoted.group(1) in _OPTION_NAMES else '"…"',
        " ".join(str(error).split()),
    )
    return (
        f"DATABASE_URL is malformed ({reason}): use postgresql://user:password@host:5432/dbname"
        " or a libpq string such as 'host=localhost dbname=cmis'"
    )


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
