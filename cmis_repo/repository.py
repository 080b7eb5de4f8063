"""The repository: one method, one statement, over the caller's connection."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, LiteralString, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import RowFactory, tuple_row
from psycopg.types.json import Jsonb

from cmis_repo.encryption import TokenCipher
from cmis_repo.errors import DecryptionError, InvalidInputError, NotFoundError, run_translated
from cmis_repo.models import (
    ConnectionInput,
    JsonValue,
    PlatformConnection,
    UpsertResult,
    connection_row,
    upsert_result_row,
)
from cmis_repo.queries import query
from cmis_repo.values import json_problem, register_stored_value_loaders, text_problem

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PlatformConnectionRepository:
    """Platform connections of ``cmis.platform_connections`` over a psycopg 3 connection.

    The caller owns the transaction: nothing here commits or rolls back. On a
    connection in autocommit mode each method is its own transaction. Every
    query is scoped by ``org_id``, and sets ``app.current_org_id`` to it for
    the rest of the transaction (so that row-level security applies; it is
    gone when the transaction ends). Errors are
    :class:`~cmis_repo.RepositoryError` subclasses; after one, a connection in
    a transaction must be rolled back, as with any PostgreSQL error.

    With a ``cipher`` (such as :class:`~cmis_repo.LaravelEncrypter`), tokens
    are encrypted before they are written and decrypted when read, so the
    database holds the same payloads the Laravel app writes. Without one,
    tokens are stored and returned as given.
    """

    def __init__(self, conn: psycopg.Connection[Any], *, cipher: TokenCipher | None = None) -> None:
        self._conn = conn
        self._cipher = cipher

    def _seal(self, token: str | None) -> str | None:
        if token is None or self._cipher is None:
            return token
        return self._cipher.encrypt(token)

    def _open(
        self, row: PlatformConnection, known: Mapping[str, str | None] | None = None
    ) -> PlatformConnection:
        """``row`` with its tokens decrypted. ``known`` maps a payload this call
        just wrote to its plaintext, which needs no decrypting."""
        if self._cipher is None:
            return row
        return dataclasses.replace(
            row,
            access_token=self._plain(row, "access_token", row.access_token, known),
            refresh_token=self._plain(row, "refresh_token", row.refresh_token, known),
        )

    def _plain(
        self,
        row: PlatformConnection,
        name: str,
        payload: str | None,
        known: Mapping[str, str | None] | None,
    ) -> str | None:
        if payload is None or self._cipher is None:
            return payload
        if known is not None and payload in known:
            return known[payload]
        try:
            return self._cipher.decrypt(payload)
        except DecryptionError as error:
            reason = error.message
        raise DecryptionError(
            f"cannot decrypt the {name} of connection {row.connection_id}: {reason}",
            hint="Check APP_KEY and APP_PREVIOUS_KEYS: the key that wrote it must be one.",
        )

    def _fetch(
        self, name: str, params: Mapping[str, object], row_factory: RowFactory[T]
    ) -> list[T]:
        statement: LiteralString = query(name)

        def run() -> list[T]:
            with self._conn.cursor(row_factory=row_factory) as cur:
                # Values stored around the functions that Python cannot hold
                # (infinite timestamps, JSON nested past the parser) read in
                # their documented form instead of failing the whole read.
                register_stored_value_loaders(cur)
                # Never a named prepared statement: behind a transaction pooler
                # (PgBouncer < 1.22) the next transaction may run on another
                # server connection, where the name is unknown or is another
                # client's statement. The work is inside PL/pgSQL, whose plans
                # the server caches anyway (docs/performance.md measures it).
                cur.execute(statement, params, prepare=False)
                return cur.fetchall()

        return run_translated(run, self._conn)

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
        :class:`UnknownOrganisationError` for an org not in ``cmis.orgs``, and
        (with a cipher, for a token kept from before) :class:`DecryptionError`
        naming the connection when a stored token decrypts under no key.
        """
        _refuse_unstorable(
            "p_",
            {
                "platform": platform,
                "account_id": account_id,
                "account_name": account_name,
                "status": status,
                "access_token": access_token,
                "refresh_token": refresh_token,
            },
            {"scopes": scopes, "account_metadata": account_metadata},
        )
        sealed_access, sealed_refresh = self._seal(access_token), self._seal(refresh_token)
        params = {
            "org_id": org_id,
            "platform": platform,
            "account_id": account_id,
            "account_name": account_name,
            "status": status,
            "access_token": sealed_access,
            "refresh_token": sealed_refresh,
            "token_expires_at": token_expires_at,
            "scopes": None if scopes is None else Jsonb(scopes),
            "account_metadata": None if account_metadata is None else Jsonb(account_metadata),
            "auto_sync": auto_sync,
            "sync_frequency_minutes": sync_frequency_minutes,
        }
        (result,) = self._fetch("upsert", params, upsert_result_row)
        if self._cipher is not None:
            known = {
                sealed: plain
                for sealed, plain in (
                    (sealed_access, access_token),
                    (sealed_refresh, refresh_token),
                )
                if sealed is not None
            }
            result = UpsertResult(result.outcome, self._open(result.connection, known))
        logger.debug(
            "upsert %s %s/%s: %s %s",
            org_id,
            platform,
            account_id,
            result.outcome,
            result.connection.connection_id,
        )
        return result

    def upsert_many(self, org_id: UUID, rows: Iterable[ConnectionInput]) -> list[UpsertResult]:
        """Restore-or-create many connections of one organisation in one database call.

        Each element gets what :meth:`upsert` would give it; the results are in
        input order. A bad element raises :class:`InvalidInputError` naming its
        position (1-based) and nothing is written; so does the same
        (platform, account_id) twice. For sync jobs: one call holds the
        organisation's lock, so single upserts of that organisation wait for it.
        """
        elements: list[dict[str, object]] = []
        known: dict[str, str | None] = {}
        for position, row in enumerate(rows, start=1):
            _refuse_unstorable(
                f"p_rows element {position} ",
                {
                    "platform": row.platform,
                    "account_id": row.account_id,
                    "account_name": row.account_name,
                    "status": row.status,
                    "access_token": row.access_token,
                    "refresh_token": row.refresh_token,
                },
                {"scopes": row.scopes, "account_metadata": row.account_metadata},
            )
            access, refresh = self._seal(row.access_token), self._seal(row.refresh_token)
            if self._cipher is not None:
                for sealed, plain in ((access, row.access_token), (refresh, row.refresh_token)):
                    if sealed is not None:
                        known[sealed] = plain
            element: dict[str, object] = {
                "platform": row.platform,
                "account_id": row.account_id,
                "status": row.status,
            }
            optional = {
                "account_name": row.account_name,
                "access_token": access,
                "refresh_token": refresh,
                "token_expires_at": None
                if row.token_expires_at is None
                else row.token_expires_at.isoformat(),
                "scopes": row.scopes,
                "account_metadata": row.account_metadata,
                "auto_sync": row.auto_sync,
                "sync_frequency_minutes": row.sync_frequency_minutes,
            }
            element.update((name, value) for name, value in optional.items() if value is not None)
            elements.append(element)
        results = self._fetch(
            "upsert_many", {"org_id": org_id, "rows": Jsonb(elements)}, upsert_result_row
        )
        if self._cipher is not None:
            results = [UpsertResult(r.outcome, self._open(r.connection, known)) for r in results]
        logger.debug("upsert_many %s: %d connection(s)", org_id, len(results))
        return results

    def get(
        self, org_id: UUID, connection_id: UUID, *, include_deleted: bool = False
    ) -> PlatformConnection | None:
        """The organisation's connection with that id, or ``None``; deleted ones only if asked."""
        rows = self._fetch(
            "get",
            {"org_id": org_id, "connection_id": connection_id, "include_deleted": include_deleted},
            connection_row,
        )
        return self._open(rows[0]) if rows else None

    def list(
        self, org_id: UUID, *, platform: str | None = None, include_deleted: bool = False
    ) -> list[PlatformConnection]:
        """The organisation's connections, optionally of one platform, by platform and account."""
        rows = self._fetch(
            "list",
            {"org_id": org_id, "platform": platform, "include_deleted": include_deleted},
            connection_row,
        )
        return [self._open(row) for row in rows]

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
        return self._open(rows[0])

    def purge(self, org_id: UUID, *, older_than: timedelta) -> int:
        """Hard-delete the organisation's rows soft-deleted more than ``older_than`` ago.

        Returns how many rows were deleted. Raises :class:`InvalidInputError`
        for a negative ``older_than``.
        """
        if older_than < timedelta(0):
            raise InvalidInputError(f"older_than must not be negative, got {older_than}")
        ((purged,),) = self._fetch("purge", {"org_id": org_id, "older_than": older_than}, tuple_row)
        return int(purged)


def _refuse_unstorable(
    prefix: str, texts: Mapping[str, str | None], documents: Mapping[str, JsonValue]
) -> None:
    """Raise :class:`InvalidInputError` for a value no database call could store
    (cmis_repo.values), before anything is encrypted or sent. The message names
    the argument, never the value."""
    for name, text in texts.items():
        if isinstance(text, str) and (problem := text_problem(text)):
            raise InvalidInputError(f"{prefix}{name} {problem}", sqlstate="22021")
    for name, document in documents.items():
        if document is not None and (found := json_problem(document)):
            problem, sqlstate = found
            raise InvalidInputError(f"{prefix}{name} {problem}", sqlstate=sqlstate)
