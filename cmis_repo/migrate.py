"""Apply (or roll back) the yoyo migrations, then install the functions.

yoyo's post-apply hook runs only when some migration was applied; ``migrate``
runs it every time, so an edited ``sql/procedures/*.sql`` ships with a plain
migrate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from yoyo import get_backend, read_migrations

from cmis_repo.database import ConnectionTarget, connect, conninfo_from_env
from cmis_repo.procedures import sql_root

logger = logging.getLogger(__name__)


@contextmanager
def _locked_backend(database_url: str | None) -> Iterator[tuple[Any, Any]]:
    """yoyo's backend (holding its migration lock) and the project's migrations."""
    with connect(conninfo_from_env(database_url), autocommit=True) as conn:
        target = ConnectionTarget.of(conn)
    backend = get_backend(target.yoyo_uri())
    try:
        with backend.lock():
            yield backend, read_migrations(str(sql_root() / "migrations"))
    finally:
        backend.connection.close()


def migrate(database_url: str | None = None) -> list[str]:
    """Apply pending migrations, then install the functions; return the ids applied.

    ``database_url``: a libpq conninfo or URL; default ``$DATABASE_URL``, else
    libpq's defaults. Raises :class:`~cmis_repo.DatabaseUnreachableError`.
    """
    with _locked_backend(database_url) as (backend, migrations):
        pending = backend.to_apply(migrations)
        backend.apply_migrations_only(pending)
        backend.run_post_apply(migrations)
    applied = [m.id for m in pending]
    logger.info("applied %d migration(s), installed the functions", len(applied))
    return applied


def rollback_all(database_url: str | None = None) -> list[str]:
    """Roll back every applied migration, newest first; return their ids."""
    with _locked_backend(database_url) as (backend, migrations):
        applied = backend.to_rollback(migrations)
        backend.rollback_migrations(applied)
    return [m.id for m in applied]
