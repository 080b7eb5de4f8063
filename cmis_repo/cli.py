"""``cmis-repo``: migrate a database and play the reconnect story.

The database is ``$DATABASE_URL``, else the local server through libpq's
defaults (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGDATABASE``).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import click

from cmis_repo.database import DatabaseUnreachable, connect, conninfo_from_env
from cmis_repo.migrate import migrate as run_migrations
from cmis_repo.models import PlatformConnection, UpsertResult
from cmis_repo.queries import query
from cmis_repo.repository import PlatformConnectionRepository

P = ParamSpec("P")
R = TypeVar("R")

#: The organisation the demo writes under; created if absent.
DEMO_ORG_ID = uuid.UUID("00000000-0000-4000-8000-00000000de40")


def _friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn an unreachable database into a message and exit status 2, not a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DatabaseUnreachable as error:
            click.secho(f"error: {error}", fg="red", err=True)
            raise SystemExit(2) from None

    return wrapper


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the library does.")
def main(verbose: bool) -> None:
    """Restore-or-create platform connections in PostgreSQL.

    The database is $DATABASE_URL, else the local server (libpq defaults).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@main.command()
@_friendly_errors
def migrate() -> None:
    """Apply pending migrations and install the functions of sql/procedures/."""
    _migrate()


def _migrate() -> None:
    applied = run_migrations()
    if applied:
        click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        click.echo("schema up to date")
    click.echo("functions installed from sql/procedures/")


def _describe(step: str, outcome: str, row: PlatformConnection) -> None:
    state = "deleted" if row.is_deleted else row.status
    click.echo(
        f"{step:<11} -> {outcome:<9} connection {row.connection_id}  "
        f"{row.platform}/{row.account_id}  {state}"
    )


@main.command()
@click.option("--keep", is_flag=True, help="Commit the demo's rows instead of rolling back.")
@_friendly_errors
def demo(keep: bool) -> None:
    """Connect, disconnect and reconnect an ad account, printing each step."""
    _demo(keep)


def _demo(keep: bool) -> None:
    account_id = f"act_demo_{secrets.token_hex(4)}"
    with connect(conninfo_from_env()) as conn:
        conn.execute(query("ensure_demo_org"), {"org_id": DEMO_ORG_ID})
        repo = PlatformConnectionRepository(conn)

        connected: UpsertResult = repo.upsert(
            DEMO_ORG_ID,
            "meta",
            account_id,
            account_name="Demo ad account",
            access_token=secrets.token_urlsafe(24),
            scopes=["ads_read"],
        )
        _describe("connect", connected.outcome, connected.connection)

        connection_id = connected.connection.connection_id
        repo.soft_delete(DEMO_ORG_ID, connection_id)
        disconnected = repo.get(DEMO_ORG_ID, connection_id, include_deleted=True)
        if disconnected is None:
            raise click.ClickException(f"connection {connection_id} vanished after disconnecting")
        _describe("disconnect", "deleted", disconnected)

        reconnected = repo.upsert(
            DEMO_ORG_ID, "meta", account_id, access_token=secrets.token_urlsafe(24)
        )
        _describe("reconnect", reconnected.outcome, reconnected.connection)
        same = reconnected.connection.connection_id == connection_id
        click.echo(f"same connection_id after reconnect: {'yes' if same else 'NO'}")

        if keep:
            conn.commit()
            click.echo(f"kept: org {DEMO_ORG_ID}, account {account_id}")
        else:
            conn.rollback()
            click.echo("rolled back (pass --keep to keep the demo's rows)")


@main.command()
@click.option("--keep", is_flag=True, help="Commit the demo's rows instead of rolling back.")
@_friendly_errors
def run(keep: bool) -> None:
    """The main job: migrate, then play the reconnect story."""
    _migrate()
    _demo(keep)
