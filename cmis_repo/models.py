"""Rows as frozen dataclasses, and the psycopg row factories that build them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import RowMaker

JsonValue: TypeAlias = dict[str, "JsonValue"] | list["JsonValue"] | str | int | float | bool | None

#: The statuses the table's CHECK constraint allows.
STATUSES: tuple[str, ...] = ("pending", "active", "warning", "expired", "revoked", "error")


class Outcome(StrEnum):
    """What :meth:`PlatformConnectionRepository.upsert` did."""

    CREATED = "created"
    RESTORED = "restored"
    UPDATED = "updated"


@dataclass(frozen=True, slots=True)
class PlatformConnection:
    """One row of ``cmis.platform_connections``.

    The tokens are kept out of ``repr`` (and so ``str``) so that logging a
    connection never logs a secret.
    """

    connection_id: UUID
    org_id: UUID
    platform: str
    account_id: str
    account_name: str | None
    status: str
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    token_expires_at: datetime | None
    scopes: JsonValue
    account_metadata: JsonValue
    last_sync_at: datetime | None
    last_error_at: datetime | None
    last_error_message: str | None
    auto_sync: bool
    sync_frequency_minutes: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True, slots=True)
class ConnectionInput:
    """One connection for :meth:`PlatformConnectionRepository.upsert_many`.

    The fields of :meth:`~PlatformConnectionRepository.upsert` after
    ``org_id``, with the same defaults: ``None`` keeps the stored value, and
    ``status`` defaults to ``"active"`` so that a reconnect re-activates.
    Tokens are kept out of ``repr``.
    """

    platform: str
    account_id: str
    account_name: str | None = None
    status: str | None = "active"
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    token_expires_at: datetime | None = None
    scopes: JsonValue = None
    account_metadata: JsonValue = None
    auto_sync: bool | None = None
    sync_frequency_minutes: int | None = None


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """The row as stored after an upsert, and how it got there."""

    outcome: Outcome
    connection: PlatformConnection


_CONNECTION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(PlatformConnection))


def _column_positions(cursor: Cursor[Any]) -> dict[str, int]:
    # From the result itself: cursor.description builds a Column object per
    # column on every access, which showed up as a third of upsert's client time.
    result = cursor.pgresult
    if result is None or not result.nfields:
        raise TypeError("the query returned no columns")
    encoding = cursor.connection.info.encoding
    return {(result.fname(i) or b"").decode(encoding): i for i in range(result.nfields)}


def _connection_maker(positions: dict[str, int]) -> Callable[[Sequence[Any]], PlatformConnection]:
    # Columns the app added to its table (an adopted database may have some)
    # are ignored; a missing one is a schema error worth failing loudly on.
    try:
        indexes = [positions[name] for name in _CONNECTION_FIELDS]
    except KeyError as missing:
        raise TypeError(f"the query did not return the column {missing}") from None

    def make(values: Sequence[Any]) -> PlatformConnection:
        return PlatformConnection(*(values[i] for i in indexes))

    return make


def connection_row(cursor: Cursor[Any]) -> RowMaker[PlatformConnection]:
    """Row factory: a :class:`PlatformConnection` from a row of the table."""
    return _connection_maker(_column_positions(cursor))


def upsert_result_row(cursor: Cursor[Any]) -> RowMaker[UpsertResult]:
    """Row factory: an :class:`UpsertResult` from ``upsert_platform_connection``."""
    positions = _column_positions(cursor)
    make_connection = _connection_maker(positions)
    outcome_at = positions["outcome"]

    def make(values: Sequence[Any]) -> UpsertResult:
        return UpsertResult(Outcome(values[outcome_at]), make_connection(values))

    return make
