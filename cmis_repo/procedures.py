"""Install and drop the PL/pgSQL functions kept in ``sql/procedures/*.sql``.

Each file is run whole, in file-name order, inside the caller's transaction.
Every statement in them is ``CREATE OR REPLACE`` or ``COMMENT``, so installing
again is harmless and installs whatever the files say now.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cmis_repo.queries import query

_FUNCTION_NAME = re.compile(r"CREATE\s+OR\s+REPLACE\s+FUNCTION\s+cmis\.(\w+)\s*\(", re.IGNORECASE)


def sql_root() -> Path:
    """The folder holding ``migrations/`` and ``procedures/``.

    A wheel ships it inside the package as ``_sql``; a source checkout (or an
    editable install) has it beside the package.
    """
    packaged = Path(__file__).resolve().parent / "_sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def procedure_files(directory: Path | None = None) -> list[Path]:
    """The ``.sql`` files of ``directory`` (default: ``sql/procedures``), sorted by name."""
    folder = directory if directory is not None else sql_root() / "procedures"
    files = sorted(folder.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no .sql files in {folder}")
    return files


def function_names(directory: Path | None = None) -> list[str]:
    """Names of the ``cmis`` functions the procedure files define."""
    names: list[str] = []
    for path in procedure_files(directory):
        names.extend(_FUNCTION_NAME.findall(path.read_text("utf-8")))
    return names


def install_procedures(conn: psycopg.Connection[Any], directory: Path | None = None) -> list[str]:
    """Run every procedure file; return the names of the files run.

    When the role ``cmis_app`` exists (migration 0004 makes it), it is granted
    EXECUTE on every function the files define, new ones included.
    """
    ran = []
    for path in procedure_files(directory):
        # Our own files, shipped with the package: trusted SQL, not input.
        conn.execute(path.read_text("utf-8"))
        ran.append(path.name)
    grants = conn.execute(query("grant_execute_to_app"), {"names": function_names(directory)})
    for (grant_sql,) in grants.fetchall():
        # Built by format() from pg_proc's own regprocedure rendering.
        conn.execute(sql.SQL(grant_sql))
    return ran


def drop_procedures(conn: psycopg.Connection[Any], directory: Path | None = None) -> list[str]:
    """Drop every overload of every function the procedure files define; return their signatures."""
    names = function_names(directory)
    signatures = [
        str(row[0])
        for row in conn.execute(query("procedure_overloads"), {"names": names}).fetchall()
    ]
    for signature in signatures:
        # A regprocedure rendering from pg_proc: already quoted and schema-qualified.
        conn.execute(sql.SQL("DROP FUNCTION {}").format(sql.SQL(signature)))
    return signatures
