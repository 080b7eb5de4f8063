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
from typing import NoReturn, ParamSpec, TypeVar

import click
import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cmis_repo.database import connect, conninfo_from_env
from cmis_repo.encryption import LaravelEncrypter
from cmis_repo.errors import EncryptionKeyError, PermissionDeniedError, RepositoryError, translate
from cmis_repo.migrate import migrate as run_migrations
from cmis_repo.models import PlatformConnection, UpsertResult
from cmis_repo.queries import query
from cmis_repo.repository import PlatformConnectionRepository
from cmis_repo.rotation import DEFAULT_BATCH_SIZE, RotationReport, count_rows, rotate_keys

P = ParamSpec("P")
R = TypeVar("R")

#: The organisation the demo writes under; created if absent.
DEMO_ORG_ID = uuid.UUID("00000000-0000-4000-8000-00000000de40")


def _friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A database that cannot be reached, is not migrated or fails a call: one
    line saying so, exit status 2, never a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (
            psycopg.errors.UndefinedTable,
            psycopg.errors.UndefinedFunction,
            psycopg.errors.InvalidSchemaName,
        ) as error:
            message = (
                f"the database is not migrated ({error.diag.message_primary}):"
                " run `cmis-repo migrate` first"
            )
        except RepositoryError as error:
            message = str(error)
        except psycopg.Error as error:
            message = translate(error).message
        click.secho(f"error: {message}", fg="red", err=True)
        raise SystemExit(2)

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


#: Undecryptable values listed one by one at the end of rotate-keys; the rest are counted.
_LISTED_UNDECRYPTABLE = 50


def _fail(message: str, status: int = 2) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    raise SystemExit(status)


@main.command("rotate-keys")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows per batch; each batch is one transaction.",
)
@_friendly_errors
def rotate_keys_command(batch_size: int) -> None:
    """Re-encrypt every token under APP_KEY, reading old ones with APP_PREVIOUS_KEYS.

    Rewrites access_token and refresh_token of every row (live and deleted,
    every organisation) in batches of one transaction each, leaving updated_at
    alone. Values already under APP_KEY are skipped, so an interrupted run
    resumes when run again. A value no key decrypts is left as it is and
    reported: exit status 1. Other errors exit with status 2.

    Run it as the table's owner (without FORCE ROW LEVEL SECURITY), a superuser
    or a BYPASSRLS role: a role subject to row-level security is refused rather
    than rotating only the rows it can see.
    """
    try:
        cipher = LaravelEncrypter.from_env()
    except EncryptionKeyError as error:
        _fail(str(error))
    with connect(conninfo_from_env(), autocommit=True) as conn:
        last = RotationReport()
        console = Console(stderr=True)
        progress_bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        try:
            total = count_rows(conn)
            with progress_bar:
                task = progress_bar.add_task("rotating", total=total)

                def on_batch(report: RotationReport) -> None:
                    nonlocal last
                    last = report
                    committed = f"last committed connection_id {report.last_connection_id}"
                    progress_bar.update(task, completed=report.rows_scanned, description=committed)
                    if not console.is_terminal:
                        click.echo(
                            f"batch {report.batches}: {report.rows_scanned}/{total} rows, "
                            + committed,
                            err=True,
                        )

                report = rotate_keys(conn, cipher, batch_size=batch_size, progress=on_batch)
        except KeyboardInterrupt:
            if last.batches:
                _print_rotation_summary(last)
            _fail("interrupted; committed batches stay, run rotate-keys again to resume", 130)
        except RepositoryError as error:
            if last.batches:
                _print_rotation_summary(last)
            if isinstance(error, PermissionDeniedError):
                _fail(
                    f"{error}\nrotate-keys must see every organisation's rows: run it as the "
                    "table's owner (without FORCE ROW LEVEL SECURITY), a superuser or a "
                    "BYPASSRLS role"
                )
            _fail(str(error))
    _print_rotation_summary(report)
    if report.undecryptable:
        click.echo("undecryptable values, left unchanged (is every old key in APP_PREVIOUS_KEYS?):")
        for value in report.undecryptable[:_LISTED_UNDECRYPTABLE]:
            click.echo(f"  {value.connection_id} {value.column}: {value.reason}")
        if report.values_undecryptable > _LISTED_UNDECRYPTABLE:
            click.echo(f"  ... and {report.values_undecryptable - _LISTED_UNDECRYPTABLE} more")
        raise SystemExit(1)


def _print_rotation_summary(report: RotationReport) -> None:
    click.echo(f"rows scanned:          {report.rows_scanned}")
    click.echo(f"values re-encrypted:   {report.values_reencrypted}")
    click.echo(f"already current:       {report.values_already_current}")
    click.echo(f"NULL (skipped):        {report.values_null}")
    click.echo(f"undecryptable:         {report.values_undecryptable}")
    click.echo(f"batches committed:     {report.batches}")
    click.echo(f"last committed connection_id: {report.last_connection_id or '-'}")
