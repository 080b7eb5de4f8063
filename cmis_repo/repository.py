"""The repository: one method, one statement, over the caller's connection."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, LiteralString, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import RowFactory, tuple_row
from psycopg.types.json import Jsonb

from cmis_repo.errors import InvalidInputError, NotFoundError, translate
from cmis_repo.models import (
    JsonValue,
    PlatformConnection,
    UpsertResult,
    connection_row,
    upsert_result_row,
)
from cmis_repo.queries import query

logger = logging.getLogger(__name__)

T = TypeVar("T")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as error:
        # "from None": the psycopg error's text carries PostgreSQL's DETAIL,
        # which for a constraint violation lists the row, tokens included.
        raise translate(error) from None


class PlatformConnectionRepository:
    """Platform connections of ``cmis.platform_connections`` over a psycopg 3 connection.

    The caller owns the transaction: nothing here commits or rolls back. On a
    connection in autocommit mode each method is its own transaction. Every
    query is scoped by ``org_id``. Errors are :class:`~cmis_repo.RepositoryError`
    subclasses; after one, a connection in a transaction must be rolled back,
    as with any PostgreSQL error.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def _fetch(
        self, name: str, params: Mapping[str, object], row_factory: RowFactory[T]
    ) -> list[T]:
        statement: LiteralString = query(name)
        with _translated(), self._conn.cursor(row_factory=row_factory) as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def upsert(
        self,
        org_id: UUID,
        platform: str,
        account_id: str,
        *,
        account_name: str | None = None,
        status: str | None = "active",
        access_token: str | None = None,
        refresh_token: str | None = None,
        token_expires_at: datetime | None = None,
        scopes: JsonValue = None,
        account_metadata: JsonValue = None,
        auto_sync: bool | None = None,
        sync_frequency_minutes: int | None = None,
    ) -> UpsertResult:
        """Restore-or-create the connection for (org_id, platform, account_id): one database call.

        A live row is updated (``Outcome.UPDATED``); else the most recently
        deleted row is undeleted and updated (``Outcome.RESTORED``); else one is
        created (``Outcome.CREATED``). ``None`` keeps the stored value;
        ``status`` defaults to ``"active"`` so that a reconnect re-activates.

        Raises :class:`InvalidInputError` for a blank or malformed argument,
        :class:`UnknownOrganisationError` for an org not in ``cmis.orgs``.
        """
        params = {
            "org_id": org_id,
            "platform": platform,
            "account_id": account_id,
            "account_name": account_name,
            "status": status,
            "access_token": access_token,
            "refresh_token": refresh_token,
            "token_expires_at": token_expires_at,
            "scopes": None if scopes is None else Jsonb(scopes),
            "account_metadata": None if account_metadata is None else Jsonb(account_metadata),
            "auto_sync": auto_sync,
            "sync_frequency_minutes": sync_frequency_minutes,
        }
        (result,) = self._fetch("upsert", params, upsert_result_row)
        logger.debug(
            "upsert %s %s/%s: %s %s",
            org_id,
            platform,
            account_id,
            result.outcome,
            result.connection.connection_id,
        )
        return result

    def get(
        self, org_id: UUID, connection_id: UUID, *, include_deleted: bool = False
    ) -> PlatformConnection | None:
        """The organisation's connection with that id, or ``None``; deleted ones only if asked."""
        rows = self._fetch(
            "get",
            {"org_id": org_id, "connection_id": connection_id, "include_deleted": include_deleted},
            connection_row,
        )
        return rows[0] if rows else None

    def list(
        self, org_id: UUID, *, platform: str | None = None, include_deleted: bool = False
    ) -> list[PlatformConnection]:
        """The organisation's connections, optionally of one platform, by platform and account."""
        return self._fetch(
            "list",
            {"org_id": org_id, "platform": platform, "include_deleted": include_deleted},
            connection_row,
        )

    def soft_delete(self, org_id: UUID, connection_id: UUID) -> bool:
        """Disconnect: soft-delete the live connection; ``False`` when nothing live matched."""
        rows = self._fetch(
            "soft_delete", {"org_id": org_id, "connection_id": connection_id}, connection_row
        )
        if rows:
            logger.debug("soft-deleted %s of org %s", connection_id, org_id)
        return bool(rows)

    def restore(self, org_id: UUID, connection_id: UUID) -> PlatformConnection:
        """Undelete the connection, values as they were; a live one is returned unchanged.

        Raises :class:`NotFoundError` when the organisation has no such
        connection, :class:`ConflictError` when another live connection holds
        its (platform, account_id).
        """
        rows = self._fetch(
            "restore", {"org_id": org_id, "connection_id": connection_id}, connection_row
        )
        if not rows:
            raise NotFoundError(f"organisation {org_id} has no connection {connection_id}")
        return rows[0]

    def purge(self, org_id: UUID, *, older_than: timedelta) -> int:
        """Hard-delete the organisation's rows soft-deleted more than ``older_than`` ago.

        Returns how many rows were deleted. Raises :class:`InvalidInputError`
        for a negative ``older_than``.
        """
        if older_than < timedelta(0):
            raise InvalidInputError(f"older_than must not be negative, got {older_than}")
        ((purged,),) = self._fetch("purge", {"org_id": org_id, "older_than": older_than}, tuple_row)
        return int(purged)
