"""The repository's exceptions, mapped from PostgreSQL SQLSTATEs.

Messages keep PostgreSQL's primary message and hint, never its DETAIL: for a
constraint violation the DETAIL is "Failing row contains (...)", which would
put the row's tokens into the exception text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import psycopg

T = TypeVar("T")

#: The class each SQLSTATE maps to, filled by the classes' own ``sqlstates``.
_BY_SQLSTATE: dict[str, type[RepositoryError]] = {}


class RepositoryError(Exception):
    """Base class of everything the repository raises.

    ``sqlstate`` is the PostgreSQL error code when the database raised it.
    A subclass names the SQLSTATEs it stands for where it is defined
    (``class ConflictError(RepositoryError, sqlstates=("23505",))``);
    ``retryable`` says whether running the whole transaction again can succeed.
    """

    sqlstates: ClassVar[tuple[str, ...]] = ()
    retryable: ClassVar[bool] = False

    def __init_subclass__(cls, *, sqlstates: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.sqlstates = sqlstates
        for sqlstate in sqlstates:
            if sqlstate in _BY_SQLSTATE:
                raise TypeError(f"SQLSTATE {sqlstate} is already {_BY_SQLSTATE[sqlstate].__name__}")
            _BY_SQLSTATE[sqlstate] = cls

    def __init__(self, message: str, *, sqlstate: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class InvalidInputError(RepositoryError, ValueError, sqlstates=("23502", "23514")):
    """An argument is NULL, blank, malformed, too long or out of range (every
    SQLSTATE of class 22, data exception; 23502, 23514). Fix the input."""


class UnknownOrganisationError(RepositoryError, sqlstates=("23503",)):
    """The org_id is not in ``cmis.orgs`` (23503)."""


class NotFoundError(RepositoryError, LookupError):
    """No connection with that id belongs to that organisation."""


class ConflictError(RepositoryError, sqlstates=("23505",)):
    """Another live connection holds the key (23505): running the same call
    again gives the same answer. (Up to 0.1.0 this also stood for 40001,
    40P01 and 55P03, which are :class:`RetryableError` now.)"""


class RetryableError(RepositoryError):
    """The transaction lost a race or its connection, not an argument: run the
    whole transaction again (on a new connection for
    :class:`ConnectionLostError`). Every call of the repository is safe to
    repeat."""

    retryable = True


class SerializationFailureError(RetryableError, sqlstates=("40001",)):
    """Under REPEATABLE READ or SERIALIZABLE, a concurrent transaction changed
    the row first (40001)."""


class DeadlockError(RetryableError, sqlstates=("40P01",)):
    """PostgreSQL ended this transaction to break a deadlock (40P01); see the
    README's "Several keys in one transaction" to avoid it."""


class LockNotAvailableError(RetryableError, sqlstates=("55P03",)):
    """A lock was not granted within ``lock_timeout`` (55P03)."""


class ConnectionLostError(RetryableError):
    """The connection to PostgreSQL broke during the call (a dropped socket, a
    killed backend, a restarted server or pooler: SQLSTATE class 08, 57P01-57P03,
    or none at all).

    The connection is unusable: open a new one. If the call ran in a
    transaction, the server rolled that transaction back. On an autocommit
    connection the call was its own commit, whose outcome is unknown: it may
    have taken effect. Every write of the repository can be repeated safely
    (``upsert`` and ``upsert_many`` give the same row again, ``soft_delete``
    and ``restore`` are idempotent), or read the rows back first.
    """


class PermissionDeniedError(RepositoryError, sqlstates=("42501",)):
    """The role may not do this, row-level security included (42501)."""


class DatabaseUnreachableError(RepositoryError):
    """No connection could be made: the server does not answer, refuses the role,
    the password or the database, or ``DATABASE_URL`` is malformed. The
    message (one line, the password masked) says which, and how to fix it."""


class EncryptionKeyError(RepositoryError, ValueError):
    """An encryption key (``APP_KEY``, ``APP_PREVIOUS_KEYS``) is missing or malformed.

    The message names the problem, never the key.
    """


class DecryptionError(RepositoryError):
    """A token payload is malformed, its MAC is valid under no key, or it does not decrypt.

    The message says which, never showing the payload, a key or a plaintext.
    """


def error_class(sqlstate: str | None) -> type[RepositoryError]:
    """The exception class for a SQLSTATE: data exceptions (class 22) are invalid input."""
    if sqlstate is None:
        return RepositoryError
    if sqlstate.startswith("22"):
        return InvalidInputError
    return _BY_SQLSTATE.get(sqlstate, RepositoryError)


#: Errors of a connection that is gone, whatever the server said (if anything).
_LOST_SQLSTATES = ("57P01", "57P02", "57P03")


def _connection_lost(error: psycopg.Error, autocommit: bool | None) -> ConnectionLostError:
    reason = " ".join((error.diag.message_primary or str(error) or "").split())
    outcome = (
        "this call was its own commit (autocommit), so whether it took effect is unknown"
        if autocommit
        else "the server rolled back the transaction it was in"
        if autocommit is not None
        else "a transaction it was in is rolled back; an autocommit call may have taken effect"
    )
    return ConnectionLostError(
        f"the connection to PostgreSQL was lost during the call ({reason or 'no reason given'}):"
        f" {outcome}",
        sqlstate=error.sqlstate,
        hint="Open a new connection and repeat the call (each call is safe to repeat),"
        " or read the rows back first.",
    )


def translate(
    error: psycopg.Error, *, autocommit: bool | None = None, broken: bool = False
) -> RepositoryError:
    """The repository exception for a psycopg error, without its DETAIL.

    A value psycopg refuses to send (a NUL in a text argument) raises
    ``DataError`` on the client, with no SQLSTATE: that is invalid input too.
    psycopg's own message then says what is wrong without quoting the value.
    """
    diag = error.diag
    lost = isinstance(error, psycopg.OperationalError) and (
        error.sqlstate is None
        or error.sqlstate.startswith("08")
        or error.sqlstate in _LOST_SQLSTATES
    )
    if broken or lost:
        return _connection_lost(error, autocommit)
    if error.sqlstate is None and isinstance(error, psycopg.DataError):
        return InvalidInputError(str(error) or type(error).__name__)
    message = diag.message_primary or type(error).__name__
    cls = error_class(error.sqlstate)
    return cls(message, sqlstate=error.sqlstate, hint=diag.message_hint)


def run_translated(run: Callable[[], T], conn: psycopg.Connection[Any] | None = None) -> T:
    """``run()``, with a psycopg error raised as the repository's exception.

    Raised outside the ``except`` block, so that the psycopg error is not even
    its ``__context__`` (which error trackers may walk): its DETAIL, for a
    constraint violation "Failing row contains (...)", lists the row, tokens
    included. With ``conn``, the connection ``run`` used, any error that left
    it broken is a lost connection (behind a pooler that can be a protocol
    error), whose message says whether the call's outcome is unknown.
    """
    try:
        return run()
    except psycopg.Error as error:
        if conn is None:
            translated = translate(error)
        else:
            translated = translate(error, autocommit=conn.autocommit, broken=conn.broken)
    raise translated
