"""Apply (or roll back) the yoyo migrations, then install the functions.

yoyo's post-apply hook runs only when some migration was applied; this runs it
every time, so an edited ``sql/procedures/*.sql`` ships with a plain migrate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from yoyo import get_backend, read_migrations

from cmis_repo.database import ConnectionTarget, conninfo_from_env, connect
from cmis_repo.procedures import sql_root

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrateReport:
    applied: list[str]
    procedures_installed: bool


def _backend_and_migrations(conninfo: str) -> tuple[object, object]:
    with connect(conninfo, autocommit=True) as conn:
        target = ConnectionTarget.of(conn)
    backend = get_backend(target.yoyo_uri())
    migrations = read_migrations(str(sql_root() / "migrations"))
    return backend, migrations


def migrate(database_url: str | None = None) -> MigrateReport:
    """Apply pending migrations and install the functions; return what was applied."""
    backend, migrations = _backend_and_migrations(conninfo_from_env(database_url))
    with backend.lock():  # type: ignore[attr-defined]
        pending = backend.to_apply(migrations)  # type: ignore[attr-defined]
        applied = [m.id for m in pending]
        backend.apply_migrations_only(pending)  # type: ignore[attr-defined]
        backend.run_post_apply(migrations)  # type: ignore[attr-defined]
    logger.info("applied %d migration(s); functions installed", len(applied))
    return MigrateReport(applied=applied, procedures_installed=True)


def rollback_all(database_url: str | None = None) -> list[str]:
    """Roll back every applied migration, newest first; return their ids."""
    backend, migrations = _backend_and_migrations(conninfo_from_env(database_url))
    with backend.lock():  # type: ignore[attr-defined]
        applied = backend.to_rollback(migrations)  # type: ignore[attr-defined]
        backend.rollback_migrations(applied)  # type: ignore[attr-defined]
    return [m.id for m in applied]
