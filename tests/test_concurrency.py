"""Concurrency: reconnects and disconnects of one key, ours and the Laravel app's, at once.

What is proved here, against a real PostgreSQL server at READ COMMITTED:

A. Many sessions calling our functions on the same keys at once: no error reaches
   a caller, never two live rows for a key, and a key never gets a second row.
B. The app's own SQL (which takes none of our locks) on the same keys: its
   statements may fail, ours never do, and there are never two live rows.
C. Step-by-step interleavings of two connections, one test per race the design
   closes: connection A does step 1 and keeps its transaction open, connection
   B calls our function in a thread, the test waits until pg_locks shows B
   blocked by A, then A commits or rolls back and B's result is checked. The
   unlocked algorithm (the app's fixed controller, run by hand) is shown to
   fail on the same interleavings, which is what the key lock prevents. Two
   tests show a disconnect + reconnect in one transaction deadlocking with the
   app's restore of another row (test_reconnect_in_one_transaction_*).
D. A stress test: 16 threads, 4 keys, 2 orgs, ours and the app's SQL mixed.

Nothing here sleeps to synchronise: waits are on pg_locks (polled with a
deadline), on threading primitives, or on thread joins with timeouts. Every
connection has statement and lock timeouts, so a bug makes a test fail, not hang.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

import psycopg
import pytest
from psycopg import errors

#: How long a test waits for a connection to show up as blocked in pg_locks.
BLOCK_TIMEOUT = 10.0
#: Poll interval while waiting for that.
POLL_INTERVAL = 0.005
#: How long joining a thread may take before the test fails.
JOIN_TIMEOUT = 30.0

Conn = psycopg.Connection[Any]


class Key(NamedTuple):
    org_id: uuid.UUID
    platform: str
    account_id: str


# --------------------------------------------------------------------------
# Our functions, called as a client does.
# --------------------------------------------------------------------------

UPSERT_SQL = """
SELECT outcome, connection_id
  FROM cmis.upsert_platform_connection(
        p_org_id => %s::uuid, p_platform => %s::text, p_account_id => %s::text,
        p_access_token => %s::text)
"""
SOFT_DELETE_SQL = (
    "SELECT connection_id FROM cmis.soft_delete_platform_connection(%s::uuid, %s::uuid)"
)
RESTORE_SQL = "SELECT connection_id FROM cmis.restore_platform_connection(%s::uuid, %s::uuid)"
LOCK_SQL = "SELECT cmis.lock_platform_connection_key(%s::uuid, %s::text, %s::text)"


def upsert(conn: Conn, key: Key, tag: str = "tok") -> tuple[str, uuid.UUID]:
    row = conn.execute(UPSERT_SQL, (*key, tag)).fetchone()
    assert row is not None
    return row[0], row[1]


def soft_delete(conn: Conn, org_id: uuid.UUID, connection_id: uuid.UUID) -> uuid.UUID | None:
    row = conn.execute(SOFT_DELETE_SQL, (org_id, connection_id)).fetchone()
    return None if row is None else row[0]


def restore(conn: Conn, org_id: uuid.UUID, connection_id: uuid.UUID) -> uuid.UUID | None:
    row = conn.execute(RESTORE_SQL, (org_id, connection_id)).fetchone()
    return None if row is None else row[0]


# --------------------------------------------------------------------------
# The Laravel app's own SQL: no advisory lock, read then write.
# --------------------------------------------------------------------------

KEY_WHERE = "org_id = %s AND platform = %s AND account_id = %s"
APP_SELECT_LIVE = (
    f"SELECT connection_id FROM cmis.platform_connections WHERE {KEY_WHERE}"
    " AND deleted_at IS NULL LIMIT 1"
)
APP_SELECT_ANY = (
    f"SELECT connection_id, deleted_at IS NOT NULL FROM cmis.platform_connections"
    f" WHERE {KEY_WHERE} ORDER BY deleted_at DESC NULLS FIRST LIMIT 1"
)
APP_UPDATE = (
    "UPDATE cmis.platform_connections SET access_token = %s, status = 'active',"
    " updated_at = now() WHERE connection_id = %s"
)
APP_RESTORE = (
    "UPDATE cmis.platform_connections SET deleted_at = NULL, access_token = %s,"
    " status = 'active', updated_at = now() WHERE connection_id = %s"
)
APP_INSERT = (
    "INSERT INTO cmis.platform_connections (org_id, platform, account_id, access_token)"
    " VALUES (%s, %s, %s, %s) RETURNING connection_id"
)
APP_SOFT_DELETE = (
    f"UPDATE cmis.platform_connections SET deleted_at = now(), updated_at = now()"
    f" WHERE {KEY_WHERE} AND deleted_at IS NULL RETURNING connection_id"
)


def app_update_or_create(conn: Conn, key: Key, tag: str = "app") -> tuple[str, uuid.UUID]:
    """App pattern 1: updateOrCreate that only sees live rows (the soft-delete scope)."""
    row = conn.execute(APP_SELECT_LIVE, key).fetchone()
    if row is not None:
        conn.execute(APP_UPDATE, (tag, row[0]))
        return "updated", row[0]
    inserted = conn.execute(APP_INSERT, (*key, tag)).fetchone()
    assert inserted is not None
    return "created", inserted[0]


def app_lookup(conn: Conn, key: Key) -> tuple[uuid.UUID, bool] | None:
    """App pattern 2, read step: the key's live row, else its most recently deleted one."""
    row = conn.execute(APP_SELECT_ANY, key).fetchone()
    return None if row is None else (row[0], row[1])


def app_write(
    conn: Conn, key: Key, found: tuple[uuid.UUID, bool] | None, tag: str = "app"
) -> tuple[str, uuid.UUID]:
    """App pattern 2, write step: restore (or update) the row found, else insert."""
    if found is None:
        inserted = conn.execute(APP_INSERT, (*key, tag)).fetchone()
        assert inserted is not None
        return "created", inserted[0]
    connection_id, was_deleted = found
    conn.execute(APP_RESTORE, (tag, connection_id))
    return ("restored" if was_deleted else "updated"), connection_id


def app_reconnect(conn: Conn, key: Key, tag: str = "app") -> tuple[str, uuid.UUID]:
    """App pattern 2, the fixed controller: our algorithm without our lock."""
    return app_write(conn, key, app_lookup(conn, key), tag)


def app_soft_delete(conn: Conn, key: Key) -> list[uuid.UUID]:
    """App pattern 3: a plain soft delete of the key's live row."""
    return [row[0] for row in conn.execute(APP_SOFT_DELETE, key).fetchall()]


# --------------------------------------------------------------------------
# Looking at the table and at who waits for whom.
# --------------------------------------------------------------------------


def key_rows(conn: Conn, key: Key) -> list[tuple[uuid.UUID, bool]]:
    """(connection_id, live) of every row of the key, oldest first."""
    rows = conn.execute(
        f"SELECT connection_id, deleted_at IS NULL FROM cmis.platform_connections"
        f" WHERE {KEY_WHERE} ORDER BY created_at, connection_id",
        key,
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def wait_until_blocked(monitor: Conn, waiter: Conn, blocker: Conn, task: Background) -> str:
    """Wait until ``waiter``'s backend waits for a lock held by ``blocker``'s; its lock type.

    Fails the test when the task ends first (it did not wait) or after BLOCK_TIMEOUT.
    """
    params = {"waiter": waiter.info.backend_pid, "blocker": blocker.info.backend_pid}
    deadline = time.monotonic() + BLOCK_TIMEOUT
    while True:
        row = monitor.execute(
            """
            SELECT l.locktype
              FROM pg_stat_activity AS a
              JOIN pg_locks AS l ON l.pid = a.pid AND NOT l.granted
             WHERE a.pid = %(waiter)s
               AND a.wait_event_type = 'Lock'
               AND %(blocker)s = ANY (pg_blocking_pids(a.pid))
            """,
            params,
        ).fetchone()
        if row is not None:
            return str(row[0])
        if task.wait(POLL_INTERVAL):
            pytest.fail(f"{task.name} finished without waiting for the other connection: {task}")
        if time.monotonic() >= deadline:
            pytest.fail(f"{task.name} did not block within {BLOCK_TIMEOUT}s")


class Background:
    """A function run in a thread; its result or exception kept for the test."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self.name = name
        self._fn = fn
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as error:
            self._error = error

    def start(self) -> Background:
        self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """Join for at most ``timeout`` seconds; whether the thread has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def result(self) -> Any:
        """Join (bounded); the function's return value, or raise what it raised."""
        if not self.wait(JOIN_TIMEOUT):
            pytest.fail(f"{self.name} still running after {JOIN_TIMEOUT}s")
        if self._error is not None:
            raise self._error
        return self._result

    def __str__(self) -> str:
        if self._thread.is_alive():
            return "running"
        return f"raised {self._error!r}" if self._error else f"returned {self._result!r}"


@contextmanager
def in_background(name: str, conn: Conn, fn: Callable[[], Any]) -> Iterator[Background]:
    """Run ``fn`` (which uses ``conn``) in a thread; whatever happens, the thread is joined.

    If the test body fails while the thread still waits on a lock, its query is
    cancelled so that the thread ends and the connection can be closed.
    """
    task = Background(name, fn).start()
    try:
        yield task
    finally:
        if not task.wait(0):
            conn.cancel_safe(timeout=5)
        task.wait(JOIN_TIMEOUT)


def make_live(conn: Conn, key: Key) -> uuid.UUID:
    outcome, connection_id = upsert(conn, key)
    assert outcome == "created"
    return connection_id


def make_deleted(conn: Conn, key: Key) -> uuid.UUID:
    connection_id = make_live(conn, key)
    assert soft_delete(conn, key.org_id, connection_id) == connection_id
    return connection_id


# --------------------------------------------------------------------------
# Workers and the live-row checker shared by the many-session tests.
# --------------------------------------------------------------------------


@dataclass
class Report:
    """What one worker thread did; merged by the test after every thread is joined."""

    name: str
    calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    app_errors: Counter[str] = field(default_factory=Counter)
    ids: defaultdict[Key, set[uuid.UUID]] = field(default_factory=lambda: defaultdict(set))
    created: Counter[Key] = field(default_factory=Counter)

    def upserted(self, key: Key, result: tuple[str, uuid.UUID]) -> None:
        """Record a committed upsert."""
        outcome, connection_id = result
        self.calls[f"upsert:{outcome}"] += 1
        self.ids[key].add(connection_id)
        if outcome == "created":
            self.created[key] += 1

    def deleted(self, key: Key, result: uuid.UUID | None) -> None:
        self.calls["soft_delete:" + ("deleted" if result else "nothing live")] += 1
        if result is not None:
            self.ids[key].add(result)


def merge(reports: list[Report]) -> Report:
    total = Report("all")
    for report in reports:
        total.calls.update(report.calls)
        total.errors.extend(report.errors)
        total.app_errors.update(report.app_errors)
        total.created.update(report.created)
        for key, ids in report.ids.items():
            total.ids[key] |= ids
    return total


def run_loop(
    report: Report,
    start: threading.Barrier,
    duration: float,
    max_iterations: int,
    step: Callable[[int], None],
) -> Report:
    """After the barrier, call ``step`` for ``duration`` seconds at most, and at most
    ``max_iterations`` times; record what it raises."""
    start.wait()
    deadline = time.monotonic() + duration
    for iteration in range(max_iterations):
        if time.monotonic() >= deadline:
            break
        try:
            step(iteration)
        except Exception as error:
            report.errors.append(
                f"{report.name} iteration {iteration}: {type(error).__name__}"
                f" [{getattr(error, 'sqlstate', None)}] {error}\n{traceback.format_exc()}"
            )
            if len(report.errors) >= 10:
                break
    return report


def app_step(conn: Conn, report: Report, pattern: str, key: Key) -> None:
    """One app transaction; its own database errors are counted, not raised."""
    try:
        with conn.transaction():
            if pattern == "update_or_create":
                outcome, _ = app_update_or_create(conn, key)
            elif pattern == "controller":
                outcome, _ = app_reconnect(conn, key)
            else:
                outcome = "deleted" if app_soft_delete(conn, key) else "nothing live"
        report.calls[f"app {pattern}:{outcome}"] += 1
    except psycopg.Error as error:
        report.app_errors[f"{pattern} {error.sqlstate} {type(error).__name__}"] += 1


def live_id(conn: Conn, key: Key) -> uuid.UUID | None:
    row = conn.execute(APP_SELECT_LIVE, key).fetchone()
    return None if row is None else row[0]


class Checker:
    """Polls the table while the workers run: never two live rows, one row per ours-only key."""

    SQL = """
        SELECT org_id, platform, account_id,
               count(*) FILTER (WHERE deleted_at IS NULL), count(*)
          FROM cmis.platform_connections
         GROUP BY org_id, platform, account_id
    """

    def __init__(self, conn: Conn, ours_only: set[Key]) -> None:
        self.conn = conn
        self.ours_only = ours_only
        self.checks = 0
        self.violations: list[str] = []
        self.stop = threading.Event()

    def check(self) -> None:
        for org_id, platform, account_id, live, total in self.conn.execute(self.SQL):
            key = Key(org_id, platform, account_id)
            if live > 1:
                self.violations.append(f"check {self.checks}: {live} live rows for {key}")
            if key in self.ours_only and total > 1:
                self.violations.append(f"check {self.checks}: {total} rows for ours-only {key}")
        self.checks += 1

    def run(self) -> int:
        while not self.stop.wait(0.02):
            self.check()
        self.check()
        return self.checks


def run_workers(
    workers: list[tuple[Report, Callable[[], Report]]], checker: Checker
) -> tuple[Report, float]:
    """Run every worker in its own thread plus the checker; join all; merge the reports."""
    tasks = [Background(report.name, fn) for report, fn in workers]
    checker_task = Background("checker", checker.run)
    started = time.monotonic()
    checker_task.start()
    for task in tasks:
        task.start()
    try:
        reports = [task.result() for task in tasks]
    finally:
        checker.stop.set()
        for task in tasks:
            task.wait(JOIN_TIMEOUT)
        checker_task.wait(JOIN_TIMEOUT)
    elapsed = time.monotonic() - started
    checker_task.result()
    return merge(reports), elapsed


def summary(title: str, total: Report, elapsed: float, checks: int) -> str:
    lines = [f"\n{title}: {elapsed:.1f}s, {sum(total.calls.values())} operations, {checks} checks"]
    lines += [f"  {name}: {count}" for name, count in sorted(total.calls.items())]
    if total.app_errors:
        lines.append("  app errors (allowed):")
        lines += [f"    {name}: {count}" for name, count in sorted(total.app_errors.items())]
    lines.append(f"  errors from our functions: {len(total.errors)}")
    return "\n".join(lines)


def assert_no_errors(total: Report, checker: Checker) -> None:
    assert not total.errors, "our functions raised:\n" + "\n".join(total.errors)
    assert not checker.violations, "\n".join(checker.violations[:20])


# ==========================================================================
# A. Many sessions, our functions only.
# ==========================================================================


def test_many_sessions_reconnect_and_disconnect_same_keys(session, monitor, org_id):
    """8 sessions reconnect and disconnect 2 keys at once: no error, one row per key ever.

    Half the sessions are autocommit (each call its own transaction), half do a
    disconnect and a reconnect in one explicit transaction.
    """
    keys = [Key(org_id, "meta", "act_many_1"), Key(org_id, "meta", "act_many_2")]
    n_threads, iterations = 8, 100
    start = threading.Barrier(n_threads, timeout=JOIN_TIMEOUT)
    checker = Checker(session(autocommit=True), set(keys))

    def worker(report: Report, conn: Conn, in_transaction: bool, offset: int) -> Report:
        def step(iteration: int) -> None:
            key = keys[(iteration + offset) % len(keys)]
            if in_transaction:
                with conn.transaction():
                    deleted = None
                    current = live_id(conn, key)
                    if current is not None:
                        deleted = soft_delete(conn, key.org_id, current)
                    result = upsert(conn, key, f"tok{iteration}")
                if current is not None:
                    report.deleted(key, deleted)
                report.upserted(key, result)
            else:
                result = upsert(conn, key, f"tok{iteration}")
                report.upserted(key, result)
                report.deleted(key, soft_delete(conn, key.org_id, result[1]))

        return run_loop(report, start, 20.0, iterations, step)

    workers: list[tuple[Report, Callable[[], Report]]] = []
    for number in range(n_threads):
        report = Report(f"session-{number}")
        in_transaction = number % 2 == 1
        workers.append(
            (report, partial(worker, report, session(autocommit=True), in_transaction, number))
        )
    total, elapsed = run_workers(workers, checker)
    print(summary("A. many sessions", total, elapsed, checker.checks))

    assert_no_errors(total, checker)
    for key in keys:
        rows = key_rows(monitor, key)
        assert len(rows) == 1, f"{key} has {len(rows)} rows: a reconnect created a duplicate"
        assert total.created[key] == 1
        assert total.ids[key] == {rows[0][0]}, "every call on the key saw the same row"
    assert total.calls["upsert:restored"] > 0
    assert total.calls["upsert:created"] == len(keys)


# ==========================================================================
# B. The app's own SQL on the same keys as our functions.
# ==========================================================================


def test_app_sql_alongside_our_functions_never_makes_ours_fail(session, monitor, org_id):
    """The app's three write patterns race ours on 2 keys: its statements may fail, ours never."""
    keys = [Key(org_id, "google", "act_mixed_1"), Key(org_id, "google", "act_mixed_2")]
    patterns = ["update_or_create", "controller", "soft_delete", "controller"]
    n_ours, iterations = 4, 250
    start = threading.Barrier(n_ours + len(patterns), timeout=JOIN_TIMEOUT)
    checker = Checker(session(autocommit=True), ours_only=set())
    duration = 8.0  # a backstop: the iteration count ends the run first

    def ours(report: Report, conn: Conn, offset: int) -> Report:
        def step(iteration: int) -> None:
            key = keys[(iteration + offset) % len(keys)]
            if iteration % 3 == 2:
                current = live_id(conn, key)
                if current is not None:
                    report.deleted(key, soft_delete(conn, key.org_id, current))
            else:
                report.upserted(key, upsert(conn, key))

        return run_loop(report, start, duration, iterations, step)

    def app(report: Report, conn: Conn, pattern: str, offset: int) -> Report:
        def step(iteration: int) -> None:
            app_step(conn, report, pattern, keys[(iteration + offset) % len(keys)])

        return run_loop(report, start, duration, iterations, step)

    workers: list[tuple[Report, Callable[[], Report]]] = []
    for number in range(n_ours):
        report = Report(f"ours-{number}")
        workers.append((report, partial(ours, report, session(autocommit=True), number)))
    for number, pattern in enumerate(patterns):
        report = Report(f"app-{pattern}-{number}")
        workers.append((report, partial(app, report, session(autocommit=True), pattern, number)))
    total, elapsed = run_workers(workers, checker)
    print(summary("B. app SQL alongside ours", total, elapsed, checker.checks))

    assert_no_errors(total, checker)
    for key in keys:
        assert sum(live for _, live in key_rows(monitor, key)) <= 1
    assert sum(n for name, n in total.calls.items() if name.startswith("upsert:")) > 0
    assert sum(n for name, n in total.calls.items() if name.startswith("app ")) > 0


# ==========================================================================
# C. Deterministic interleavings of two connections.
# ==========================================================================


def finish(conn: Conn, how: str) -> None:
    if how == "commit":
        conn.commit()
    else:
        conn.rollback()


def test_upsert_vs_upsert_on_a_deleted_key(session, monitor, org_id):
    """Both want to restore: B waits on A's key lock, then updates the row A restored."""
    key = Key(org_id, "meta", "act_c1")
    deleted = make_deleted(monitor, key)
    a, b = session(), session(autocommit=True)

    assert upsert(a, key, "from A") == ("restored", deleted)
    with in_background("B upsert", b, lambda: upsert(b, key, "from B")) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        a.commit()
        assert task.result() == ("updated", deleted)
    assert key_rows(monitor, key) == [(deleted, True)]


@pytest.mark.parametrize(("how", "expected"), [("commit", "restored"), ("rollback", "updated")])
def test_our_soft_delete_then_upsert(session, monitor, org_id, how, expected):
    """A disconnects (uncommitted), B reconnects: B waits, then restores (or updates) A's row."""
    key = Key(org_id, "meta", "act_c2")
    connection_id = make_live(monitor, key)
    a, b = session(), session(autocommit=True)

    assert soft_delete(a, org_id, connection_id) == connection_id
    with in_background("B upsert", b, lambda: upsert(b, key)) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        finish(a, how)
        assert task.result() == (expected, connection_id)
    assert key_rows(monitor, key) == [(connection_id, True)]


def test_upsert_restoring_then_our_soft_delete(session, monitor, org_id):
    """A reconnects in one transaction (disconnect, then upsert on the restore path).

    B disconnects the same row meanwhile: it waits on A's key lock, then deletes
    the row A restored. One row, deleted, no error.
    """
    key = Key(org_id, "meta", "act_c3")
    connection_id = make_live(monitor, key)
    a, b = session(), session(autocommit=True)

    assert soft_delete(a, org_id, connection_id) == connection_id
    assert upsert(a, key) == ("restored", connection_id)
    with in_background("B soft_delete", b, lambda: soft_delete(b, org_id, connection_id)) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        a.commit()
        assert task.result() == connection_id
    assert key_rows(monitor, key) == [(connection_id, False)]


def test_soft_delete_of_a_row_being_restored_finds_nothing_live(session, monitor, org_id):
    """A restores a deleted row (uncommitted); B disconnecting it sees it deleted.

    B neither waits nor fails: at READ COMMITTED nothing live is committed, so
    there is nothing to disconnect yet. After A commits, B's retry deletes it.
    """
    key = Key(org_id, "meta", "act_c4")
    connection_id = make_deleted(monitor, key)
    a, b = session(), session(autocommit=True)

    assert upsert(a, key) == ("restored", connection_id)
    with in_background("B soft_delete", b, lambda: soft_delete(b, org_id, connection_id)) as task:
        assert task.result() is None
    a.commit()
    assert key_rows(monitor, key) == [(connection_id, True)]
    assert soft_delete(b, org_id, connection_id) == connection_id
    assert key_rows(monitor, key) == [(connection_id, False)]


@pytest.mark.parametrize("how", ["commit", "rollback"])
def test_first_insert_race(session, monitor, org_id, how):
    """Two upserts of a brand-new key: A creates, B waits, then updates A's row (one row)."""
    key = Key(org_id, "meta", "act_c5")
    a, b = session(), session(autocommit=True)

    outcome, created = upsert(a, key, "from A")
    assert outcome == "created"
    with in_background("B upsert", b, lambda: upsert(b, key, "from B")) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        finish(a, how)
        b_outcome, b_id = task.result()
    if how == "commit":
        assert (b_outcome, b_id) == ("updated", created)
    else:
        assert b_outcome == "created"
        assert b_id != created
    assert key_rows(monitor, key) == [(b_id, True)]


@pytest.mark.parametrize("how", ["commit", "rollback"])
def test_app_insert_while_our_upsert_restores(session, monitor, org_id, how):
    """The app inserts a live row (uncommitted) past a deleted one; our upsert restores.

    Our restore's unique check waits on the app's transaction (B blocked on A's
    transaction id). App commits: the restore hits unique_violation, the function
    goes round and updates the app's row: 'updated', no error. App rolls back:
    'restored'.
    """
    key = Key(org_id, "meta", "act_c6")
    deleted = make_deleted(monitor, key)
    a, b = session(), session(autocommit=True)

    app_outcome, app_row = app_update_or_create(a, key)
    assert app_outcome == "created"
    with in_background("B upsert", b, lambda: upsert(b, key)) as task:
        assert wait_until_blocked(monitor, b, a, task) == "transactionid"
        finish(a, how)
        result = task.result()
    if how == "commit":
        assert result == ("updated", app_row)
        assert sorted(key_rows(monitor, key), key=lambda r: r[1]) == [
            (deleted, False),
            (app_row, True),
        ]
    else:
        assert result == ("restored", deleted)
        assert key_rows(monitor, key) == [(deleted, True)]


@pytest.mark.parametrize(("how", "expected"), [("commit", "restored"), ("rollback", "updated")])
def test_app_soft_delete_while_our_upsert_updates(session, monitor, org_id, how, expected):
    """The app soft-deletes the live row (uncommitted); our upsert waits on the row.

    After the app commits our call restores the same row; after a rollback it updates it.
    """
    key = Key(org_id, "meta", "act_c7")
    connection_id = make_live(monitor, key)
    a, b = session(), session(autocommit=True)

    assert app_soft_delete(a, key) == [connection_id]
    with in_background("B upsert", b, lambda: upsert(b, key)) as task:
        assert wait_until_blocked(monitor, b, a, task) == "transactionid"
        finish(a, how)
        assert task.result() == (expected, connection_id)
    assert key_rows(monitor, key) == [(connection_id, True)]


@pytest.mark.parametrize(("how", "expected"), [("commit", "updated"), ("rollback", "restored")])
def test_app_restore_while_our_upsert_restores(session, monitor, org_id, how, expected):
    """The app's fixed controller restores the deleted row (uncommitted); so does our upsert.

    Ours waits on the row; after the app commits it finds the row live: its INSERT sees a
    row of the key, so creates nothing and goes round to update the row (the path that
    keeps the app's restore-then-soft-delete from making a second row); after a rollback
    it restores the row itself. One live row.
    """
    key = Key(org_id, "meta", "act_c8")
    deleted = make_deleted(monitor, key)
    a, b = session(), session(autocommit=True)

    assert app_reconnect(a, key) == ("restored", deleted)
    with in_background("B upsert", b, lambda: upsert(b, key)) as task:
        assert wait_until_blocked(monitor, b, a, task) == "transactionid"
        finish(a, how)
        assert task.result() == (expected, deleted)
    assert key_rows(monitor, key) == [(deleted, True)]


ADVISORY_LOCKS_HELD = (
    "SELECT mode, classid::bigint, objid::bigint, objsubid FROM pg_locks"
    " WHERE locktype = 'advisory' AND pid = pg_backend_pid() ORDER BY 1, 2, 3"
)


@pytest.mark.parametrize("account_id", ["act_1", "act 2 ü", "x" * 255])
def test_upsert_takes_the_locks_lock_platform_connection_key_takes(
    session, monitor, org_id, account_id
):
    """upsert_platform_connection takes the key's locks inline: the very same two locks
    (the org's shared, the key's exclusive), or our writers would not exclude each other."""
    key = Key(org_id, "google", account_id)
    ours, lock = session(), session()
    upsert(ours, key)
    held_by_upsert = ours.execute(ADVISORY_LOCKS_HELD).fetchall()
    ours.rollback()
    lock.execute(LOCK_SQL, key)
    held_by_lock = lock.execute(ADVISORY_LOCKS_HELD).fetchall()
    lock.rollback()
    assert held_by_upsert == held_by_lock
    assert [mode for mode, *_ in held_by_lock] == ["ExclusiveLock", "ShareLock"]


def make_ours_the_deadlock_victim(app, ours) -> None:
    """Let our session's deadlock check fire first, so a deadlock we take part in fails us."""
    app.execute("SET deadlock_timeout = '20s'")
    app.commit()
    ours.execute("SET deadlock_timeout = '100ms'")
    ours.commit()


def reconnect_while_app_restore_waits(monitor, app, t, key, found, l_id, r_id) -> None:
    """The app restores what it read (its unique check waiting for T), then T upserts.

    T must restore L without error; the app's statement fails on its own
    unique check; the key ends with R deleted and L live.
    """
    with in_background("app restore", app, lambda: app_write(app, key, found)) as app_task:
        assert wait_until_blocked(monitor, app, t, app_task) == "transactionid"
        with in_background("T upsert", t, lambda: upsert(t, key)) as t_upsert:
            assert t_upsert.wait(JOIN_TIMEOUT)
            assert t_upsert.error is None, f"our upsert failed: {t_upsert.error!r}"
            assert t_upsert.result() == ("restored", l_id)
            t.commit()
        assert app_task.wait(JOIN_TIMEOUT)
    assert isinstance(app_task.error, errors.UniqueViolation)  # the app's own failure
    app.rollback()
    assert sorted(key_rows(monitor, key), key=lambda r: r[1]) == [(r_id, False), (l_id, True)]


def test_reconnect_in_one_transaction_does_not_deadlock_with_an_app_restore(
    session, monitor, org_id
):
    """Our disconnect + reconnect in one transaction, while the app restores another row.

    T soft-deletes the live row L, then upserts in the same transaction. The
    app's controller (its read stale) restores an older row R meanwhile: its
    unique check waits for T, because L's index entry is being deleted by T. If
    T's upsert then picks R to restore, it waits for the app's row lock: a
    deadlock, and PostgreSQL aborts one of the two. T must not be the one
    (here T's deadlock_timeout is the shorter, so T would be).

    R can look more recently deleted than L: soft_delete_platform_connection
    takes its timestamp when called, before it waits for the key lock, so a
    call that waited stamps an older time than deletions made while it waited.
    """
    key = Key(org_id, "meta", "act_c14")
    l_id = make_deleted(monitor, key)
    outcome, r_id = app_update_or_create(monitor, key)  # the app ignores deleted rows
    assert outcome == "created"
    app, u, t = session(), session(), session()
    make_ours_the_deadlock_victim(app, t)

    # 1. The app's controller reads: R is the key's live row.
    found = app_lookup(app, key)
    assert found == (r_id, False)
    # 2. We disconnect R and bring L back.
    assert soft_delete(monitor, org_id, r_id) == r_id
    assert restore(monitor, org_id, l_id) == l_id
    # 3. U, one of our transactions, holds the key lock.
    assert upsert(u, key) == ("updated", l_id)
    # 4. T disconnects L: it sees L live, then waits for U.
    with in_background("T soft_delete", t, lambda: soft_delete(t, org_id, l_id)) as t_delete:
        assert wait_until_blocked(monitor, t, u, t_delete) == "advisory"
        # 5. Meanwhile U disconnects and reconnects both rows, ending with L live.
        assert soft_delete(u, org_id, l_id) == l_id
        assert restore(u, org_id, r_id) == r_id
        assert soft_delete(u, org_id, r_id) == r_id
        assert restore(u, org_id, l_id) == l_id
        u.commit()
        assert t_delete.result() == l_id
    # 6. The app writes what it read: restore R. Its unique check waits for T.
    # 7. T reconnects, in the transaction that disconnected L.
    reconnect_while_app_restore_waits(monitor, app, t, key, found, l_id, r_id)


def test_reconnect_in_one_transaction_with_app_clock_ahead_does_not_deadlock(
    session, monitor, org_id
):
    """The same deadlock, from the app's own timestamps.

    Laravel stamps deleted_at with the app server's clock, which may run ahead
    of the database's. Here the app soft-deleted R with its clock a minute
    ahead, so R sorts as the most recently deleted row even after we delete L.
    """
    key = Key(org_id, "meta", "act_c15")
    _, r_id = app_update_or_create(monitor, key)
    monitor.execute(
        f"UPDATE cmis.platform_connections SET deleted_at = %s, updated_at = %s"
        f" WHERE {KEY_WHERE} AND deleted_at IS NULL",
        (app_clock := datetime.now(UTC) + timedelta(minutes=1), app_clock, *key),
    )
    app, t = session(), session()
    make_ours_the_deadlock_victim(app, t)

    found = app_lookup(app, key)  # the controller reads: R, deleted
    assert found == (r_id, True)
    outcome, l_id = app_update_or_create(monitor, key)  # another request makes L live
    assert outcome == "created"
    assert soft_delete(t, org_id, l_id) == l_id  # T disconnects L, transaction open
    reconnect_while_app_restore_waits(monitor, app, t, key, found, l_id, r_id)


# --- The same races without the lock: the unlocked algorithm fails. -------


def test_without_the_lock_first_insert_race_raises_unique_violation(session, monitor, org_id):
    """Restore-or-create by hand, no lock: both look, both insert; B gets 23505."""
    key = Key(org_id, "meta", "act_c9")
    a, b = session(), session()

    assert app_lookup(a, key) is None
    assert app_lookup(b, key) is None
    assert app_write(a, key, None)[0] == "created"
    with in_background("B insert", b, lambda: app_write(b, key, None)) as task:
        assert wait_until_blocked(monitor, b, a, task) == "transactionid"
        a.commit()
        assert task.wait(JOIN_TIMEOUT)
    assert isinstance(task.error, errors.UniqueViolation)
    b.rollback()
    assert len(key_rows(monitor, key)) == 1


def test_with_the_lock_first_insert_race_updates(session, monitor, org_id):
    """The same steps, each transaction taking the key lock first: B waits, then updates."""
    key = Key(org_id, "meta", "act_c10")
    a, b = session(), session()

    def b_steps() -> tuple[str, uuid.UUID]:
        b.execute(LOCK_SQL, key)
        result = app_write(b, key, app_lookup(b, key))
        b.commit()
        return result

    a.execute(LOCK_SQL, key)
    assert app_lookup(a, key) is None
    _, created = app_write(a, key, None)
    with in_background("B lock, look, write", b, b_steps) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        a.commit()
        assert task.result() == ("updated", created)
    assert key_rows(monitor, key) == [(created, True)]


def test_without_the_lock_reconnect_racing_a_disconnect_duplicates_history(
    session, monitor, org_id
):
    """No lock: B looks (nothing), A creates, the row is disconnected, B inserts.

    The key ends with two rows: the reconnect made a new row instead of restoring.
    """
    key = Key(org_id, "meta", "act_c11")
    a, b = session(), session()

    assert app_lookup(a, key) is None
    assert app_lookup(b, key) is None
    _, first = app_write(a, key, None)
    a.commit()
    assert soft_delete(monitor, org_id, first) == first
    _, second = app_write(b, key, None)
    b.commit()
    rows = key_rows(monitor, key)
    assert sorted(rows, key=lambda r: r[1]) == [(first, False), (second, True)]


def test_with_the_lock_reconnect_racing_a_disconnect_keeps_one_row(session, monitor, org_id):
    """The same steps with the key lock: the disconnect cannot get between B's look and write.

    B takes the lock (waits for A), looks, and is held there by the test; our
    soft_delete of A's row then waits on B's key lock; B writes and commits,
    then the disconnect runs. One row, deleted.
    """
    key = Key(org_id, "meta", "act_c12")
    a, b, c = session(), session(), session(autocommit=True)
    looked, write = threading.Event(), threading.Event()

    def b_steps() -> tuple[str, uuid.UUID]:
        b.execute(LOCK_SQL, key)
        found = app_lookup(b, key)
        looked.set()
        if not write.wait(JOIN_TIMEOUT):
            raise TimeoutError("never told to write")
        result = app_write(b, key, found)
        b.commit()
        return result

    a.execute(LOCK_SQL, key)
    assert app_lookup(a, key) is None
    _, first = app_write(a, key, None)
    with in_background("B lock, look, write", b, b_steps) as b_task:
        try:
            assert wait_until_blocked(monitor, b, a, b_task) == "advisory"
            a.commit()
            assert looked.wait(JOIN_TIMEOUT)
            disconnect = lambda: soft_delete(c, org_id, first)  # noqa: E731
            with in_background("C soft_delete", c, disconnect) as c_task:
                assert wait_until_blocked(monitor, c, b, c_task) == "advisory"
                write.set()
                assert b_task.result() == ("updated", first)
                assert c_task.result() == first
        finally:
            write.set()
    assert key_rows(monitor, key) == [(first, False)]


# --- READ COMMITTED is what the functions are built for. -------------------


@pytest.mark.parametrize("deleted_first", [True, False], ids=["restore", "create"])
def test_repeatable_read_caller_gets_serialization_failure_not_a_duplicate(
    session, monitor, org_id, deleted_first
):
    """Under REPEATABLE READ, B's snapshot predates A's commit: PostgreSQL raises 40001.

    That is PostgreSQL's documented behaviour for a concurrent update at that
    level; the caller retries the transaction. No duplicate is written, and the
    retry updates the one row.
    """
    key = Key(org_id, "meta", "act_c13")
    if deleted_first:
        make_deleted(monitor, key)
    a, b = session(), session()
    b.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ

    _, connection_id = upsert(a, key)
    with in_background("B upsert", b, lambda: upsert(b, key)) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        a.commit()
        assert task.wait(JOIN_TIMEOUT)
    assert isinstance(task.error, errors.SerializationFailure)
    b.rollback()
    assert key_rows(monitor, key) == [(connection_id, True)]
    assert upsert(b, key) == ("updated", connection_id)
    b.commit()


# ==========================================================================
# D. Stress: 16 threads, 4 keys, 2 orgs, ours and the app's SQL mixed.
# ==========================================================================


@pytest.mark.slow
def test_stress_ours_and_app_sql_on_four_keys(session, monitor, org_id, other_org_id):
    """16 threads for ~5 s: ours (autocommit and 2-call transactions) and the app's SQL.

    Keys act_ours are written only through our functions, act_mixed also by the
    app. Ours never fail; never two live rows; ours-only keys have one row ever.
    A failure prints every error with its traceback, and the seed of the run.

    Which side of a deadlock PostgreSQL aborts depends on who waited first. To
    make any deadlock our calls take part in show up as a failure, our sessions
    get a shorter deadlock_timeout than the app's (when the role may set it).
    """
    ours_only = [Key(org_id, "meta", "act_ours"), Key(other_org_id, "google", "act_ours")]
    mixed = [Key(org_id, "meta", "act_mixed"), Key(other_org_id, "google", "act_mixed")]
    all_keys = ours_only + mixed
    duration, max_iterations = 5.0, 5000
    n_auto, n_txn, app_patterns = 6, 4, ["update_or_create", "controller", "soft_delete"] * 2
    n_threads = n_auto + n_txn + len(app_patterns)
    assert n_threads == 16
    start = threading.Barrier(n_threads, timeout=JOIN_TIMEOUT)
    checker = Checker(session(autocommit=True), set(ours_only))

    def ours_auto(report: Report, conn: Conn, rng: random.Random) -> Report:
        def step(_: int) -> None:
            key = rng.choice(all_keys)
            roll = rng.random()
            if roll < 0.55:
                report.upserted(key, upsert(conn, key, f"tok{rng.random()}"))
            elif roll < 0.9 or key not in ours_only:
                target = live_id(conn, key)
                if target is not None:
                    report.deleted(key, soft_delete(conn, key.org_id, target))
            else:
                rows = key_rows(conn, key)
                if rows:
                    report.calls["restore"] += 1
                    assert restore(conn, key.org_id, rows[0][0]) == rows[0][0]

        return run_loop(report, start, duration, max_iterations, step)

    def ours_txn(report: Report, conn: Conn, rng: random.Random) -> Report:
        def step(_: int) -> None:
            key = rng.choice(all_keys)
            kind = rng.choice(["reconnect", "connect+disconnect", "upsert twice"])
            done: list[Callable[[], None]] = []
            with conn.transaction():
                if kind == "reconnect":
                    target = live_id(conn, key)
                    if target is not None:
                        deleted = soft_delete(conn, key.org_id, target)
                        done.append(lambda: report.deleted(key, deleted))
                    result = upsert(conn, key)
                    done.append(lambda: report.upserted(key, result))
                elif kind == "connect+disconnect":
                    result = upsert(conn, key)
                    deleted = soft_delete(conn, key.org_id, result[1])
                    done += [
                        lambda: report.upserted(key, result),
                        lambda: report.deleted(key, deleted),
                    ]
                else:
                    first, second = upsert(conn, key), upsert(conn, key)
                    assert second == ("updated", first[1])
                    done += [
                        lambda: report.upserted(key, first),
                        lambda: report.upserted(key, second),
                    ]
            report.calls[f"transaction:{kind}"] += 1
            for record in done:  # only what committed counts
                record()

        return run_loop(report, start, duration, max_iterations, step)

    def app(report: Report, conn: Conn, pattern: str, rng: random.Random) -> Report:
        def step(_: int) -> None:
            app_step(conn, report, pattern, rng.choice(mixed))

        return run_loop(report, start, duration, max_iterations, step)

    seed = random.randrange(1 << 30)  # noqa: S311 - test data, not secrets
    print(f"\nstress seed {seed}")
    workers: list[tuple[Report, Callable[[], Report]]] = []
    superuser = monitor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    may_set_deadlock_timeout = bool(superuser.fetchone()[0])
    for number in range(n_threads):
        rng = random.Random(seed + number)  # noqa: S311
        conn = session(autocommit=True)
        if may_set_deadlock_timeout:
            ours = number < n_auto + n_txn
            conn.execute(f"SET deadlock_timeout = '{'100ms' if ours else '2s'}'")
        if number < n_auto:
            report = Report(f"ours-auto-{number}")
            workers.append((report, partial(ours_auto, report, conn, rng)))
        elif number < n_auto + n_txn:
            report = Report(f"ours-txn-{number}")
            workers.append((report, partial(ours_txn, report, conn, rng)))
        else:
            pattern = app_patterns[number - n_auto - n_txn]
            report = Report(f"app-{pattern}-{number}")
            workers.append((report, partial(app, report, conn, pattern, rng)))
    total, elapsed = run_workers(workers, checker)
    print(summary("D. stress", total, elapsed, checker.checks))

    assert_no_errors(total, checker)
    for key in all_keys:
        assert sum(live for _, live in key_rows(monitor, key)) <= 1, key
    for key in ours_only:
        rows = key_rows(monitor, key)
        assert len(rows) == 1, f"ours-only {key} has {len(rows)} rows"
        assert total.created[key] == 1, f"ours-only {key} created {total.created[key]} times"
        assert total.ids[key] == {rows[0][0]}
    assert checker.checks > 10
    assert total.calls["upsert:restored"] > 0
    assert elapsed < duration + 15
