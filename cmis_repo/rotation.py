"""Key rotation: re-encrypt every stored token under the current ``APP_KEY``.

After the Laravel app moves to a new key (``APP_KEY`` = the new key,
``APP_PREVIOUS_KEYS`` = the old ones, so that it still reads old values),
:func:`rotate_keys` re-encrypts ``access_token`` and ``refresh_token`` of every
row of ``cmis.platform_connections`` (live and soft-deleted, every
organisation) under the new key, so that the old one can be retired.

- Batches of rows by ``connection_id`` (keyset pagination), each in its own
  transaction: the rows are locked (``FOR UPDATE``), their tokens decrypted and
  re-encrypted in Python, and written back by one set-based ``UPDATE`` that
  changes a row's two tokens together; then the batch commits.
- Values already under the current key, and NULLs, are skipped: an
  interrupted run is resumed by running it again.
- A value no key decrypts is never modified: it is reported (connection id and
  column, never the value).
- ``updated_at`` is left alone: rotation does not change the connection.
- Each transaction runs with ``row_security = off``, so that a role subject to
  row-level security fails (42501, :class:`PermissionDeniedError`) instead of
  rotating one organisation's rows. Run it as the table's owner (when the table
  does not ``FORCE ROW LEVEL SECURITY``), a superuser, or a ``BYPASSRLS`` role.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar
from uuid import UUID

import psycopg
from psycopg.pq import TransactionStatus

from cmis_repo.encryption import TokenCipher
from cmis_repo.errors import DecryptionError, run_translated
from cmis_repo.queries import query

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows per batch (per transaction) when the caller does not say.
DEFAULT_BATCH_SIZE = 1000

#: The columns rotated, in the order they are read.
TOKEN_COLUMNS: tuple[str, str] = ("access_token", "refresh_token")


class RotatingCipher(TokenCipher, Protocol):
    """A :class:`TokenCipher` that tells values under its current key apart."""

    def uses_current_key(self, payload: str) -> bool:
        """Whether ``payload`` is already under the current key."""
        ...


@dataclass(frozen=True, slots=True)
class UndecryptableValue:
    """A stored token no key could decrypt, left as it was. Never holds the value."""

    connection_id: UUID
    column: str
    reason: str


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What a rotation did so far; the counts cover the committed batches only."""

    rows_scanned: int = 0
    rows_updated: int = 0
    values_reencrypted: int = 0
    values_already_current: int = 0
    values_null: int = 0
    undecryptable: tuple[UndecryptableValue, ...] = ()
    batches: int = 0
    #: The highest ``connection_id`` of the last committed batch; ``None`` before the first.
    last_connection_id: UUID | None = None

    @property
    def values_undecryptable(self) -> int:
        return len(self.undecryptable)


#: Called after each committed batch with the running totals.
ProgressCallback = Callable[[RotationReport], None]


def _check_idle(conn: psycopg.Connection[Any]) -> None:
    status = conn.info.transaction_status
    if status != TransactionStatus.IDLE:
        raise ValueError(
            "key rotation commits batch by batch: pass a connection that is not inside a "
            f"transaction (its status is {status.name})"
        )


def count_rows(conn: psycopg.Connection[Any]) -> int:
    """Rows of ``cmis.platform_connections``, every organisation, live and deleted.

    Runs in a transaction of its own, with ``row_security = off`` as
    :func:`rotate_keys` does, so a role that policies would filter fails here.
    """
    _check_idle(conn)
    return run_translated(partial(_count_rows, conn))


def _count_rows(conn: psycopg.Connection[Any]) -> int:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("rotation_disable_row_security"))
        cur.execute(query("rotation_count_rows"))
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


class _Batch:
    """One batch's new values and counts, before it commits."""

    def __init__(self) -> None:
        self.connection_ids: list[UUID] = []
        self.new_values: tuple[list[str | None], list[str | None]] = ([], [])
        self.reencrypted = 0
        self.current = 0
        self.null = 0
        self.undecryptable: list[UndecryptableValue] = []

    def add(self, cipher: RotatingCipher, row: Sequence[Any]) -> None:
        connection_id: UUID = row[0]
        news: list[str | None] = []
        for column, value in zip(TOKEN_COLUMNS, row[1:], strict=True):
            news.append(self._rotate(cipher, connection_id, column, value))
        if any(new is not None for new in news):
            self.connection_ids.append(connection_id)
            for values, new in zip(self.new_values, news, strict=True):
                values.append(new)

    def _rotate(
        self, cipher: RotatingCipher, connection_id: UUID, column: str, value: str | None
    ) -> str | None:
        """The value re-encrypted under the current key, or ``None`` to keep it."""
        if value is None:
            self.null += 1
            return None
        if cipher.uses_current_key(value):
            self.current += 1
            return None
        try:
            plaintext = cipher.decrypt(value)
        except DecryptionError as error:
            self.undecryptable.append(UndecryptableValue(connection_id, column, str(error)))
            return None
        self.reencrypted += 1
        return cipher.encrypt(plaintext)


def rotate_keys(
    conn: psycopg.Connection[Any],
    cipher: RotatingCipher,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> RotationReport:
    """Re-encrypt every row's tokens under ``cipher``'s current key; return what was done.

    ``conn`` must not be inside a transaction: each batch of ``batch_size``
    rows is a transaction of its own, committed before the next one starts,
    and ``progress`` (if given) is called after each commit with the running
    totals. An exception (from the database, the cipher or ``progress``)
    stops the run; the batches committed so far stay, the current one is
    rolled back, and running again resumes. Database errors are raised as
    :class:`~cmis_repo.RepositoryError` subclasses, a role subject to
    row-level security as :class:`~cmis_repo.PermissionDeniedError`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    _check_idle(conn)
    report = RotationReport()
    while True:
        step = partial(_rotate_batch, conn, cipher, batch_size, report.last_connection_id)
        rows, batch = run_translated(step)
        if not rows:
            break
        report = dataclasses.replace(
            report,
            rows_scanned=report.rows_scanned + len(rows),
            rows_updated=report.rows_updated + len(batch.connection_ids),
            values_reencrypted=report.values_reencrypted + batch.reencrypted,
            values_already_current=report.values_already_current + batch.current,
            values_null=report.values_null + batch.null,
            undecryptable=report.undecryptable + tuple(batch.undecryptable),
            batches=report.batches + 1,
            last_connection_id=max(row[0] for row in rows),
        )
        logger.debug(
            "rotation batch %d committed: %d rows, %d values re-encrypted, last connection_id %s",
            report.batches,
            len(rows),
            batch.reencrypted,
            report.last_connection_id,
        )
        if progress is not None:
            progress(report)
        if len(rows) < batch_size:
            break
    return report


def _rotate_batch(
    conn: psycopg.Connection[Any],
    cipher: RotatingCipher,
    batch_size: int,
    after: UUID | None,
) -> tuple[list[Any], _Batch]:
    """One batch in one transaction: lock the rows after ``after``, rewrite, commit."""
    batch = _Batch()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("rotation_disable_row_security"))
        if after is None:
            cur.execute(query("rotation_first_batch"), {"batch_size": batch_size})
        else:
            cur.execute(query("rotation_next_batch"), {"batch_size": batch_size, "after": after})
        rows = cur.fetchall()
        for row in rows:
            batch.add(cipher, row)
        if batch.connection_ids:
            access_tokens, refresh_tokens = batch.new_values
            cur.execute(
                query("rotation_update"),
                {
                    "connection_ids": batch.connection_ids,
                    "access_tokens": access_tokens,
                    "refresh_tokens": refresh_tokens,
                },
            )
            if cur.rowcount != len(batch.connection_ids):
                # The rows are locked, so this cannot happen; if it does, write nothing.
                raise RuntimeError(
                    f"updated {cur.rowcount} rows of a batch of {len(batch.connection_ids)}"
                )
    return rows, batch
