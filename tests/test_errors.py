"""Errors callers can act on: each class declares its SQLSTATEs, a retryable
branch apart from the unique conflict, the unreachable database inside the
hierarchy. Raised for real where PostgreSQL raises them."""

from __future__ import annotations

import inspect
import threading
import time

import pytest

import cmis_repo
from cmis_repo import (
    ConflictError,
    ConnectionLostError,
    DatabaseUnreachableError,
    DeadlockError,
    InvalidInputError,
    LockNotAvailableError,
    PermissionDeniedError,
    PlatformConnectionRepository,
    RepositoryError,
    RetryableError,
    SerializationFailureError,
    UnknownOrganisationError,
)
from cmis_repo.database import DatabaseUnreachable, connect
from cmis_repo.errors import error_class


def test_every_exported_error_is_a_repository_error():
    exported = [
        getattr(cmis_repo, name)
        for name in cmis_repo.__all__
        if inspect.isclass(getattr(cmis_repo, name))
        and issubclass(getattr(cmis_repo, name), BaseException)
    ]
    assert DatabaseUnreachableError in exported
    assert all(issubclass(cls, RepositoryError) for cls in exported)


@pytest.mark.parametrize(
    ("sqlstate", "cls", "retryable"),
    [
        ("22023", InvalidInputError, False),
        ("22001", InvalidInputError, False),
        ("23502", InvalidInputError, False),
        ("23514", InvalidInputError, False),
        ("23503", UnknownOrganisationError, False),
        ("23505", ConflictError, False),
        ("42501", PermissionDeniedError, False),
        ("40001", SerializationFailureError, True),
        ("40P01", DeadlockError, True),
        ("55P03", LockNotAvailableError, True),
        ("XX000", RepositoryError, False),
    ],
)
def test_each_sqlstate_has_one_class_and_says_if_it_is_retryable(sqlstate, cls, retryable):
    assert error_class(sqlstate) is cls
    assert cls.retryable is retryable
    if not sqlstate.startswith("22") and cls is not RepositoryError:
        assert sqlstate in cls.sqlstates


def test_the_retryable_branch_is_apart_from_the_unique_conflict():
    for cls in (SerializationFailureError, DeadlockError, LockNotAvailableError):
        assert issubclass(cls, RetryableError)
    assert issubclass(ConnectionLostError, RetryableError)
    assert not issubclass(ConflictError, RetryableError)
    assert not issubclass(RetryableError, ConflictError)


def test_a_sqlstate_cannot_be_declared_twice():
    with pytest.raises(TypeError, match="23505"):

        class Twice(RepositoryError, sqlstates=("23505",)):
            pass


def test_the_unreachable_database_is_a_repository_error_under_both_names(server):
    assert DatabaseUnreachable is DatabaseUnreachableError
    with pytest.raises(DatabaseUnreachableError) as caught:
        connect(f"host={server['host']} port={server['port']} user=nobody_here dbname=x")
    assert isinstance(caught.value, RepositoryError)


@pytest.fixture
def live_row(db, org_id):
    row = PlatformConnectionRepository(db).upsert(org_id, "meta", "act_1").connection
    db.commit()
    return row


def test_a_lock_timeout_is_lock_not_available(session, org_id, live_row):
    holder, waiter = session(), session()
    holder.execute("SELECT FROM cmis.platform_connections WHERE true FOR UPDATE")
    waiter.execute("SET lock_timeout = '50ms'")
    with pytest.raises(LockNotAvailableError) as caught:
        PlatformConnectionRepository(waiter).soft_delete(org_id, live_row.connection_id)
    assert caught.value.retryable
    assert caught.value.sqlstate == "55P03"


def test_a_serialization_failure_is_retryable(session, org_id, live_row):
    first, second = session(), session()
    second.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    second.execute("SELECT count(*) FROM cmis.platform_connections")  # its snapshot
    PlatformConnectionRepository(first).upsert(org_id, "meta", "act_1", account_name="first")
    first.commit()
    with pytest.raises(SerializationFailureError) as caught:
        PlatformConnectionRepository(second).upsert(org_id, "meta", "act_1", account_name="2nd")
    assert caught.value.retryable


def test_a_deadlock_is_retryable(session, monitor, org_id):
    a, b = session(), session()
    for conn in (a, b):
        conn.execute("SET deadlock_timeout = '50ms'")
        conn.commit()
    PlatformConnectionRepository(a).upsert(org_id, "meta", "k1")
    PlatformConnectionRepository(b).upsert(org_id, "meta", "k2")
    errors: list[BaseException] = []

    def b_then_k1() -> None:
        try:
            PlatformConnectionRepository(b).upsert(org_id, "meta", "k1")
        except RepositoryError as error:
            errors.append(error)

    waiting = threading.Thread(target=b_then_k1)
    waiting.start()
    deadline = time.monotonic() + 10
    while not monitor.execute(  # until B waits for A's key lock
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (b.info.backend_pid,)
    ).fetchone()[0]:
        assert time.monotonic() < deadline, "B never waited for k1"
    try:
        PlatformConnectionRepository(a).upsert(org_id, "meta", "k2")
    except RepositoryError as error:
        errors.append(error)
    waiting.join(10)
    assert len(errors) == 1, errors
    assert isinstance(errors[0], DeadlockError)
    assert errors[0].retryable
    for conn in (a, b):
        conn.rollback()


def test_a_lost_connection_is_retryable(connect, monitor, org_id):
    conn = connect(autocommit=True)
    monitor.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    with pytest.raises(ConnectionLostError) as caught:
        PlatformConnectionRepository(conn).list(org_id)
    assert caught.value.retryable
    assert caught.value.__context__ is None  # the psycopg error is not chained
