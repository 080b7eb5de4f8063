"""Concurrency of the bulk call ``cmis.upsert_platform_connections``.

The bulk call holds the organisation's advisory lock exclusively (unless its
transaction already holds it shared: then the keys' locks); every single-key
function of ours holds it shared (as ``cmis.lock_platform_connection_key``
does, before the key's own lock). What is
proved here, against a real PostgreSQL server at READ COMMITTED:

A. Step-by-step interleavings of two connections (waits observed in pg_locks,
   as in tests/test_concurrency.py): an open single-key write blocks a bulk
   call of the same org, which then sees what it wrote; an open bulk call
   blocks single-key writes of the same org, to any key, and another bulk call
   of the org; nothing of another org waits.
B. Bugs found here, each now a regression test with a deterministic
   interleaving:
   - a transaction that made a single-key write of an org and then called the
     bulk function upgraded the org lock from shared to exclusive: it
     deadlocked with a plain single upsert of the key, or with a second such
     transaction. Such a transaction now takes the keys' locks in byte order
     instead of the org's (and still excludes single and bulk calls);
   - unique violations on two *other* keys (the app making them live) used up
     the bulk call's attempts, and it created a row for a key whose deleted
     row nobody touched (BUG_ATTEMPTS);
   - the app restoring, then soft-deleting, a key's row while the bulk call
     ran made it create a second row for the key (the single call had the
     same code path): a key is now created only when the INSERT's snapshot
     holds no row of it.
C. A stress test, three ways: bulk calls, single calls and the app's plain
   soft deletes; the same with all of the app's SQL (inserts and restores
   too); and with our soft deletes before the bulk call in the same
   transaction (keys taken in byte order, as the README asks of a transaction
   that writes several keys).
   The row-count assertions and why they are sound: see ``stress``.

Nothing sleeps to synchronise: waits are on pg_locks, threading primitives or
joins with timeouts; every connection has statement and lock timeouts.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.test_concurrency import (
    JOIN_TIMEOUT,
    LOCK_SQL,
    Background,
    Key,
    in_background,
    make_deleted,
    make_live,
    soft_delete,
    upsert,
    wait_until_blocked,
)

Conn = psycopg.Connection[Any]

BULK_SQL = (
    "SELECT ord, outcome, connection_id, platform, account_id"
    " FROM cmis.upsert_platform_connections(%s::uuid, %s::jsonb)"
)
UPSERT_SQL = (
    "SELECT outcome, connection_id FROM cmis.upsert_platform_connection("
    "p_org_id => %s::uuid, p_platform => %s::text, p_account_id => %s::text,"
    " p_access_token => %s::text)"
)
SOFT_DELETE_SQL = (
    "SELECT connection_id FROM cmis.soft_delete_platform_connection(%s::uuid, %s::uuid)"
)
KEY_WHERE = "org_id = %s AND platform = %s AND account_id = %s"
LIVE_ID_SQL = (
    f"SELECT connection_id FROM cmis.platform_connections WHERE {KEY_WHERE} AND deleted_at IS NULL"
)

# The app's own SQL: no advisory lock.
APP_INSERT = (
    "INSERT INTO cmis.platform_connections (org_id, platform, account_id, access_token)"
    " VALUES (%s, %s, %s, 'app')"
    " ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL DO NOTHING"
    " RETURNING connection_id"
)
APP_SOFT_DELETE = (
    f"UPDATE cmis.platform_connections SET deleted_at = now(), updated_at = now()"
    f" WHERE {KEY_WHERE} AND deleted_at IS NULL RETURNING connection_id"
)
APP_RESTORE = f"""
UPDATE cmis.platform_connections SET deleted_at = NULL, updated_at = now()
 WHERE connection_id = (SELECT connection_id FROM cmis.platform_connections
                         WHERE {KEY_WHERE} AND deleted_at IS NOT NULL
                         ORDER BY deleted_at DESC LIMIT 1)
   AND deleted_at IS NOT NULL
RETURNING connection_id
"""


def element(key: Key, **fields: Any) -> dict[str, Any]:
    return {"platform": key.platform, "account_id": key.account_id, **fields}


def bulk(
    conn: Conn, org_id: uuid.UUID, keys: list[Key], **fields: Any
) -> list[tuple[str, uuid.UUID]]:
    """The bulk call for ``keys`` (all of org_id): (outcome, connection_id) in input order."""
    rows = conn.execute(BULK_SQL, (org_id, Jsonb([element(k, **fields) for k in keys]))).fetchall()
    assert [(r[0], r[3], r[4]) for r in rows] == [
        (n, k.platform, k.account_id) for n, k in enumerate(keys, start=1)
    ]
    return [(r[1], r[2]) for r in rows]


def live_id(conn: Conn, key: Key) -> uuid.UUID | None:
    row = conn.execute(LIVE_ID_SQL, key).fetchone()
    return None if row is None else row[0]


def key_rows(conn: Conn, key: Key) -> list[tuple[uuid.UUID, bool]]:
    """(connection_id, live) of every row of the key, oldest first."""
    rows = conn.execute(
        f"SELECT connection_id, deleted_at IS NULL FROM cmis.platform_connections"
        f" WHERE {KEY_WHERE} ORDER BY created_at, connection_id",
        key,
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def assert_finishes_without_waiting(task: Background) -> Any:
    """The task ends on its own while the other transaction stays open."""
    assert task.wait(JOIN_TIMEOUT), f"{task.name} is still waiting"
    return task.result()


# ==========================================================================
# A. Interleavings.
# ==========================================================================


@pytest.mark.parametrize(("how", "expected"), [("commit", "updated"), ("rollback", "created")])
def test_an_open_single_upsert_blocks_a_bulk_call_which_then_sees_its_row(
    session, monitor, org_id, how, expected
):
    """A creates key k with the single call, uncommitted; B's bulk call [j, k] waits on the
    org's lock (advisory), then updates A's row (or creates one after a rollback)."""
    k, j = Key(org_id, "meta", "act_k"), Key(org_id, "meta", "act_j")
    j_id = make_deleted(monitor, j)
    a, b = session(), session(autocommit=True)

    outcome, a_id = upsert(a, k, "from A")
    assert outcome == "created"
    with in_background("B bulk", b, lambda: bulk(b, org_id, [j, k])) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        if how == "commit":
            a.commit()
        else:
            a.rollback()
        (j_outcome, j_row), (k_outcome, k_row) = task.result()
    assert (j_outcome, j_row) == ("restored", j_id)
    assert k_outcome == expected
    assert (k_row == a_id) is (how == "commit")
    assert key_rows(monitor, k) == [(k_row, True)]


def test_an_open_single_soft_delete_blocks_a_bulk_call_which_then_restores_the_row(
    session, monitor, org_id
):
    k = Key(org_id, "meta", "act_k")
    k_id = make_live(monitor, k)
    a, b = session(), session(autocommit=True)

    assert soft_delete(a, org_id, k_id) == k_id
    with in_background("B bulk", b, lambda: bulk(b, org_id, [k])) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        a.commit()
        assert task.result() == [("restored", k_id)]
    assert key_rows(monitor, k) == [(k_id, True)]


SINGLE_CALLS_AFTER_A_BULK = ["upsert a key of the batch", "upsert another key", "soft delete"]


@pytest.mark.parametrize("call", SINGLE_CALLS_AFTER_A_BULK)
def test_an_open_bulk_call_blocks_single_writes_of_the_org(session, monitor, org_id, call):
    """A's bulk call [k (deleted), n (new)] is open; B's single call of the same org waits
    for it, for a key of A's batch or not; after A commits, B sees A's rows."""
    k, n, other = (Key(org_id, "meta", a) for a in ("act_k", "act_n", "act_other"))
    k_id = make_deleted(monitor, k)
    other_id = make_live(monitor, other)
    a, b = session(), session(autocommit=True)

    results = bulk(a, org_id, [k, n])
    assert results[0] == ("restored", k_id)
    assert results[1][0] == "created"

    def b_call() -> Any:
        if call == "upsert a key of the batch":
            return upsert(b, k, "from B")
        if call == "upsert another key":
            return upsert(b, other, "from B")
        return soft_delete(b, org_id, other_id)

    with in_background("B single", b, b_call) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        a.commit()
        result = task.result()
    if call == "upsert a key of the batch":
        assert result == ("updated", k_id)
    elif call == "upsert another key":
        assert result == ("updated", other_id)
    else:
        assert result == other_id
    assert key_rows(monitor, n) == [(results[1][1], True)]


def test_two_bulk_calls_of_one_org_take_turns(session, monitor, org_id):
    k = Key(org_id, "meta", "act_k")
    a, b = session(), session(autocommit=True)

    [(outcome, a_id)] = bulk(a, org_id, [k])
    assert outcome == "created"
    with in_background("B bulk", b, lambda: bulk(b, org_id, [k])) as task:
        assert wait_until_blocked(monitor, b, a, task) == "advisory"
        a.commit()
        assert task.result() == [("updated", a_id)]
    assert key_rows(monitor, k) == [(a_id, True)]


def test_nothing_of_another_org_waits_for_a_bulk_call(session, monitor, org_id, other_org_id):
    """A's bulk call of org 1 is open. Org 2's bulk call, single upsert and soft delete, on
    the very same platform/account ids, finish while it stays open; a control call of
    org 1 does wait (so the open call does hold what it should)."""
    keys1 = [Key(org_id, "meta", "act_same"), Key(org_id, "google", "g_same")]
    keys2 = [Key(other_org_id, "meta", "act_same"), Key(other_org_id, "google", "g_same")]
    deleted2 = make_deleted(monitor, keys2[0])
    live2 = make_live(monitor, keys2[1])
    a, b, control = session(), session(autocommit=True), session(autocommit=True)

    bulk(a, org_id, keys1)

    with in_background("org 2 bulk", b, lambda: bulk(b, other_org_id, keys2)) as task:
        assert assert_finishes_without_waiting(task) == [("restored", deleted2), ("updated", live2)]
    with in_background("org 2 upsert", b, lambda: upsert(b, keys2[0])) as task:
        assert assert_finishes_without_waiting(task) == ("updated", deleted2)
    with in_background("org 2 delete", b, lambda: soft_delete(b, other_org_id, live2)) as task:
        assert assert_finishes_without_waiting(task) == live2

    with in_background("org 1 control", control, lambda: upsert(control, keys1[0])) as task:
        assert wait_until_blocked(monitor, control, a, task) == "advisory"
        a.rollback()
        assert task.result()[0] == "created"


def test_bulk_single_writes_and_bulk_again_in_one_transaction(session, monitor, org_id):
    """Bulk (exclusive org lock), then single writes (the lock shared: the transaction's
    own, no wait), then bulk again: the row this transaction soft-deleted is restored."""
    k, j = Key(org_id, "meta", "act_k"), Key(org_id, "meta", "act_j")
    a = session()
    [(outcome, k_id)] = bulk(a, org_id, [k])
    assert outcome == "created"
    outcome, j_id = upsert(a, j)
    assert outcome == "created"
    assert soft_delete(a, org_id, k_id) == k_id
    assert bulk(a, org_id, [j, k]) == [("updated", j_id), ("restored", k_id)]
    a.commit()
    assert key_rows(monitor, k) == [(k_id, True)]
    assert key_rows(monitor, j) == [(j_id, True)]


# ==========================================================================
# B. Bugs found here, now regression tests (deterministic interleavings).
# ==========================================================================

# Fixed: a transaction that made a single-key write of an org (soft_delete / upsert /
# restore take the org's advisory lock SHARED) and then called upsert_platform_connections
# for that org asked for the same lock EXCLUSIVE, a lock upgrade: any other transaction
# holding the org lock shared and waiting for this one (an autocommit single upsert of the
# same key, waiting on the key lock; or a second such transaction) deadlocked with it
# (40P01). Such a transaction now takes the keys' locks instead, in byte order.


def detect_deadlocks_fast(*conns: Conn) -> None:
    """A short deadlock_timeout, so a deadlock is detected (and fails the test) in 100 ms."""
    for conn in conns:
        conn.execute("SET deadlock_timeout = '100ms'")
        conn.commit()


def test_disconnect_then_bulk_in_one_transaction_vs_a_single_upsert_of_the_key(
    session, monitor, org_id
):
    """T disconnects k (shared org lock + k's lock), B's autocommit single upsert of k takes
    the shared org lock and waits for k's lock, then T's bulk reconnect of k: it used to ask
    for the org lock exclusively and wait for B, B waiting for T. Now it takes k's lock,
    which it holds: it goes on, and B goes on once T commits."""
    k = Key(org_id, "meta", "act_k")
    k_id = make_live(monitor, k)
    t, b = session(), session(autocommit=True)
    detect_deadlocks_fast(t, b)

    assert soft_delete(t, org_id, k_id) == k_id
    with in_background("B upsert", b, lambda: upsert(b, k, "from B")) as b_task:
        assert wait_until_blocked(monitor, b, t, b_task) == "advisory"
        assert bulk(t, org_id, [k]) == [("restored", k_id)]
        assert not b_task.wait(0.2), "B got k's lock while T holds it"
        t.commit()
        assert b_task.result() == ("updated", k_id)
    assert key_rows(monitor, k) == [(k_id, True)]


def test_two_disconnect_then_bulk_transactions_of_one_org(session, monitor, org_id):
    """T1 and T2 each disconnect one key (shared org lock), then each bulk-reconnects its
    key: they used to deadlock, each asking for the org lock exclusively; neither waits now."""
    k1, k2 = Key(org_id, "meta", "act_1"), Key(org_id, "meta", "act_2")
    id1, id2 = make_live(monitor, k1), make_live(monitor, k2)
    t1, t2 = session(), session()
    detect_deadlocks_fast(t1, t2)

    assert soft_delete(t1, org_id, id1) == id1
    assert soft_delete(t2, org_id, id2) == id2
    assert bulk(t1, org_id, [k1]) == [("restored", id1)]
    assert bulk(t2, org_id, [k2]) == [("restored", id2)]
    t1.commit()
    t2.commit()
    assert key_rows(monitor, k1) == [(id1, True)]
    assert key_rows(monitor, k2) == [(id2, True)]


def test_keys_locked_before_the_bulk_call_out_of_order_can_deadlock_as_documented(
    session, monitor, org_id
):
    """The limit the README states ("Several keys in one transaction"): T1 disconnects k2,
    then bulk-reconnects [k1, k2]; T2 holds k1 (an open single upsert) and then asks for k2.
    Each holds a key the other waits for: PostgreSQL ends one of them (40P01). No lock order
    inside the functions can prevent it. Which one: the first whose deadlock_timeout runs
    out once both wait; T1's is long, so T2 is the victim."""
    k1, k2 = Key(org_id, "meta", "act_1"), Key(org_id, "meta", "act_2")
    id1, id2 = make_live(monitor, k1), make_live(monitor, k2)
    t1, t2 = session(), session()
    detect_deadlocks_fast(t2)
    t1.execute("SET deadlock_timeout = '5s'")
    t1.commit()

    assert soft_delete(t1, org_id, id2) == id2
    assert upsert(t2, k1, "from T2") == ("updated", id1)
    with in_background("T1 bulk", t1, lambda: bulk(t1, org_id, [k1, k2])) as task:
        assert wait_until_blocked(monitor, t1, t2, task) == "advisory"
        with pytest.raises(errors.DeadlockDetected):
            upsert(t2, k2, "from T2")
        t2.rollback()
        assert task.result() == [("updated", id1), ("restored", id2)]
    t1.commit()


def test_disconnect_then_bulk_waits_for_a_key_another_transaction_holds(session, monitor, org_id):
    """The keys' locks still exclude: T (holding the org lock shared after its disconnect of
    k) bulk-reconnects [k, j] while S holds j's lock (an open single upsert of j): T waits
    for S, then sees S's row."""
    k, j = Key(org_id, "meta", "act_k"), Key(org_id, "meta", "act_j")
    k_id = make_live(monitor, k)
    t, s = session(), session()
    detect_deadlocks_fast(t, s)

    assert soft_delete(t, org_id, k_id) == k_id
    outcome, j_id = upsert(s, j, "from S")
    assert outcome == "created"
    with in_background("T bulk", t, lambda: bulk(t, org_id, [k, j])) as task:
        assert wait_until_blocked(monitor, t, s, task) == "advisory"
        s.commit()
        assert task.result() == [("restored", k_id), ("updated", j_id)]
    t.commit()


def test_a_plain_bulk_call_waits_for_a_disconnect_then_bulk_transaction(session, monitor, org_id):
    """T holds the org lock shared (disconnect, then bulk: keys' locks); a bulk call of the
    org in another transaction asks for the org lock exclusively: it waits for T, on a key T
    never named too, and then sees what T wrote."""
    k, other = Key(org_id, "meta", "act_k"), Key(org_id, "google", "g_other")
    k_id = make_live(monitor, k)
    t, b = session(), session()
    detect_deadlocks_fast(t, b)

    assert soft_delete(t, org_id, k_id) == k_id
    assert bulk(t, org_id, [k]) == [("restored", k_id)]
    with in_background("B bulk", b, lambda: bulk(b, org_id, [other, k])) as task:
        assert wait_until_blocked(monitor, b, t, task) == "advisory"
        t.commit()
        [(first, _), (second, row)] = task.result()
    b.commit()
    assert (first, second, row) == ("created", "updated", k_id)


def test_disconnect_then_bulk_takes_the_keys_locks_not_the_org_lock(session, monitor, org_id):
    """What the transaction holds afterwards: the org lock shared only (never exclusive),
    and one advisory lock per key of the batch, the same locks lock_platform_connection_key
    takes."""
    keys = [Key(org_id, "meta", f"act_{n}") for n in (3, 1, 2)] + [Key(org_id, "google", "x")]
    k_id = make_live(monitor, keys[0])
    t = session()
    assert soft_delete(t, org_id, k_id) == k_id
    bulk(t, org_id, keys)
    held = t.execute(
        "SELECT mode, classid::bigint, objid::bigint FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchall()
    t.rollback()
    expected = set()
    for key in keys:
        # The locks lock_platform_connection_key takes, read off a transaction of their own.
        monitor.execute("BEGIN")
        monitor.execute(LOCK_SQL, key)
        expected |= set(
            monitor.execute(
                "SELECT mode, classid::bigint, objid::bigint FROM pg_locks"
                " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            ).fetchall()
        )
        monitor.execute("ROLLBACK")
    assert set(held) == expected
    assert sorted(mode for mode, _, _ in held) == ["ExclusiveLock"] * 4 + ["ShareLock"]


BUG_ATTEMPTS = (
    "BUG: upsert_platform_connections undeletes every pending key in ONE statement; a unique "
    "violation on any key (the app made that key live) rolls back the undelete of all of them, "
    "and after two such rounds (c_max_attempts = 3, the last round skips the undelete) every "
    "key still pending is CREATED although its deleted row was never touched: a second row "
    "for the key, which the single call, element by element, never makes"
)


# Regression (BUG_ATTEMPTS, fixed): a round now counts against the attempts
# only when it moved nothing forward.
def test_app_inserts_on_two_keys_do_not_make_the_bulk_call_create_a_third_key(
    session, monitor, org_id
):
    """kx, ky, kz each have one deleted row. The app inserts live rows for kx and ky
    (uncommitted, each in its own transaction). The bulk call [kx, ky, kz] undeletes all
    three; its unique check waits on one app insert: that app commits (23505 -> round 2,
    which updates that key), the undelete waits on the other: it commits (23505 -> round 3).
    Element by element, kz would be restored: nobody touched its row."""
    kx, ky, kz = (Key(org_id, "meta", a) for a in ("act_x", "act_y", "act_z"))
    deleted = {key: make_deleted(monitor, key) for key in (kx, ky, kz)}
    apps = {kx: session(), ky: session()}
    app_rows = {}
    for key, app in apps.items():
        row = app.execute(APP_INSERT, key).fetchone()
        assert row is not None
        app_rows[key] = row[0]
    t = session()

    with in_background("T bulk", t, lambda: bulk(t, org_id, [kx, ky, kz])) as task:
        for _ in range(2):
            # Whichever app insert the undelete's unique check now waits for commits.
            waiting_for = [k for k, app in apps.items() if blocks(monitor, t, app, task)]
            assert len(waiting_for) == 1, waiting_for
            apps.pop(waiting_for[0]).commit()
        results = task.result()
    t.commit()
    assert results[0] == ("updated", app_rows[kx])
    assert results[1] == ("updated", app_rows[ky])
    assert results[2] == ("restored", deleted[kz])
    assert key_rows(monitor, kz) == [(deleted[kz], True)]


def blocks(monitor: Conn, waiter: Conn, blocker: Conn, task: Background) -> bool:
    """Whether ``waiter`` waits for ``blocker`` once it waits for anything at all."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = monitor.execute("SELECT pg_blocking_pids(%s)", (waiter.info.backend_pid,)).fetchone()
        if row is not None and row[0]:
            return blocker.info.backend_pid in row[0]
        if task.wait(0.005):
            pytest.fail(f"{task.name} finished without waiting: {task}")
    pytest.fail("the bulk call never waited")


# Regression (fixed; the same code path was in upsert_platform_connection): a key with no
# live row in the fast path's snapshot whose deleted row the app restores before the
# undelete looks (so the undelete finds nothing to restore) went to INSERT ... ON CONFLICT;
# with the app's plain soft delete of that row in progress by then, the INSERT waited for
# it and, once it committed, found no conflict and CREATED a second row for the key, the
# app's row deleted and free to restore. Both functions now create a key only when the
# INSERT's snapshot holds no row of it at all, and otherwise go round.
def test_app_restore_then_soft_delete_while_the_bulk_call_runs_makes_no_second_row(
    session, monitor, org_id
):
    """Key a has one row, O, deleted; l1 a live row; k0 none. The app soft-deletes l1's row
    and inserts k0 (both open). The bulk call [l1, k0, a] waits on l1's row in its fast
    path; meanwhile the app restores O and commits. The undelete then finds no deleted row
    of a (O is live), so a goes to the INSERT, which waits on k0's app insert; the app
    soft-deletes O meanwhile (open; nothing of ours holds O) and commits k0. The INSERT
    used to wait for the soft delete of O and, once it committed, create a second row for
    a. Now the INSERT, seeing O, leaves a out; the next pass's fast path waits for the
    soft delete of O, and the undelete after it brings O back: a second row for a is what
    the project exists to prevent."""
    a, k0, l1 = (Key(org_id, "meta", n) for n in ("act_a", "act_k0", "act_l1"))
    o_id = make_deleted(monitor, a)
    l1_id = make_live(monitor, l1)
    restorer, deleter, inserter, l1_deleter, t = (
        session(autocommit=True),
        session(),
        session(),
        session(),
        session(),
    )

    assert l1_deleter.execute(APP_SOFT_DELETE, l1).fetchall() == [(l1_id,)]
    inserted = inserter.execute(APP_INSERT, k0).fetchone()
    assert inserted is not None
    with in_background("T bulk", t, lambda: bulk(t, org_id, [l1, k0, a])) as task:
        assert wait_until_blocked(monitor, t, l1_deleter, task) == "transactionid"
        assert restorer.execute(APP_RESTORE, a).fetchall() == [(o_id,)]  # committed
        l1_deleter.commit()
        assert wait_until_blocked(monitor, t, inserter, task) == "transactionid"
        assert deleter.execute(APP_SOFT_DELETE, a).fetchall() == [(o_id,)]
        inserter.commit()
        assert wait_until_blocked(monitor, t, deleter, task) == "transactionid"
        deleter.commit()
        results = task.result()
    t.commit()
    assert results[0] == ("restored", l1_id)
    assert results[1] == ("updated", inserted[0])
    assert results[2] == ("restored", o_id), f"a: {results[2]}, O is {o_id}"
    assert key_rows(monitor, a) == [(o_id, True)]


# ==========================================================================
# C. Stress.
# ==========================================================================


class DeadlockSeen(AssertionError):
    """A call of ours was a deadlock's victim (40P01)."""


class CreatedInsteadOfRestoring(AssertionError):
    """Our call did not bring back the row it should have: it created a row for a key that
    had rows, or did not restore the row its own transaction had just soft-deleted."""


@dataclass
class Report:
    """What one worker did; only committed work is recorded, merged after every join."""

    name: str
    calls: Counter[str] = field(default_factory=Counter)
    #: exceptions our calls raised (or our in-transaction assertions), with tracebacks
    errors: list[str] = field(default_factory=list)
    deadlocks: list[str] = field(default_factory=list)
    #: a bulk call that created a row for a key whose row its own transaction had just
    #: soft-deleted (and holds): the row it should have restored
    created_instead: list[str] = field(default_factory=list)
    app_errors: Counter[str] = field(default_factory=Counter)
    #: rows our calls created, per key (committed)
    ours_created: Counter[Key] = field(default_factory=Counter)
    #: rows the app's INSERT created, per key (committed)
    app_inserted: Counter[Key] = field(default_factory=Counter)


def merge(reports: list[Report]) -> Report:
    total = Report("all")
    for report in reports:
        total.calls.update(report.calls)
        total.errors.extend(report.errors)
        total.deadlocks.extend(report.deadlocks)
        total.created_instead.extend(report.created_instead)
        total.app_errors.update(report.app_errors)
        total.ours_created.update(report.ours_created)
        total.app_inserted.update(report.app_inserted)
    return total


class Checker:
    """Checks what must hold at every moment, from its own connection: never two live
    rows for a key; never two rows for a key only our calls insert.

    Polled in a loop by its thread, and called by our workers after each commit (on
    their own connection), so every committed transaction of ours is followed by a check.
    """

    SQL = """
        SELECT org_id, platform, account_id,
               count(*) FILTER (WHERE deleted_at IS NULL), count(*)
          FROM cmis.platform_connections
         GROUP BY org_id, platform, account_id
    """

    def __init__(self, conn: Conn, ours_insert_only: set[Key]) -> None:
        self.conn = conn
        self.ours_insert_only = ours_insert_only
        self.checks = 0
        self.two_live: list[str] = []
        self.two_rows: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def check(self, conn: Conn | None = None, after: str = "poll") -> None:
        two_live, two_rows = [], []
        for org_id, platform, account_id, live, total in (conn or self.conn).execute(self.SQL):
            key = Key(org_id, platform, account_id)
            if live > 1:
                two_live.append(f"{after}: {live} live rows for {key}")
            if key in self.ours_insert_only and total > 1:
                two_rows.append(f"{after}: {total} rows for {key}, which only we insert")
        with self._lock:
            self.checks += 1
            self.two_live.extend(two_live)
            self.two_rows.extend(two_rows)

    def run(self) -> int:
        while not self.stop.wait(0.01):
            self.check()
        self.check()
        return self.checks


def run_loop(
    report: Report, start: threading.Barrier, duration: float, step: Callable[[], None]
) -> Report:
    """After the barrier, call ``step`` for ``duration`` seconds; record what it raises."""
    start.wait()
    deadline = time.monotonic() + duration
    iteration = 0
    while time.monotonic() < deadline:
        iteration += 1
        try:
            step()
        except Exception as error:
            text = (
                f"{report.name} iteration {iteration}: {type(error).__name__}"
                f" [{getattr(error, 'sqlstate', None)}] {error}\n{traceback.format_exc()}"
            )
            if isinstance(error, errors.DeadlockDetected):
                report.deadlocks.append(text)
            else:
                report.errors.append(text)
            if len(report.errors) + len(report.deadlocks) >= 10:
                break
    return report


@dataclass(frozen=True)
class Plan:
    """The keys of the stress test and what stands in the table before it starts."""

    keys: dict[uuid.UUID, list[Key]]
    #: keys the app's INSERT never touches: only our calls may create their rows
    ours_insert_only: set[Key]
    #: keys the app inserts too
    mixed: set[Key]
    #: rows per key before the run
    initial_rows: dict[Key, int]


def make_plan(conn: Conn, org_id: uuid.UUID, other_org_id: uuid.UUID) -> Plan:
    """20 keys of org 1 and 12 of org 2; half of each only inserted by us. Most start with
    rows (live; deleted; deleted twice; live with a deleted one), a few with none."""
    keys = {
        org_id: [Key(org_id, "meta", f"act_{n:02d}") for n in range(14)]
        + [Key(org_id, "google", f"g_{n}") for n in range(6)],
        other_org_id: [Key(other_org_id, "meta", f"act_{n:02d}") for n in range(12)],
    }
    ours_insert_only: set[Key] = set()
    mixed: set[Key] = set()
    initial_rows: dict[Key, int] = {}
    for org_keys in keys.values():
        for number, key in enumerate(org_keys):
            only_ours = number % 2 == 0
            (ours_insert_only if only_ours else mixed).add(key)
            # 0: no row; 1: live; 2: deleted; 3: deleted twice; 4: live and deleted.
            # Keys only we insert hold at most one row (the checker's invariant).
            shape = number % 3 if only_ours else number % 5
            deleted = {0: 0, 1: 0, 2: 1, 3: 2, 4: 1}[shape]
            live = shape in (1, 4)
            for n in range(deleted):
                conn.execute(
                    "INSERT INTO cmis.platform_connections"
                    " (org_id, platform, account_id, deleted_at)"
                    " VALUES (%s, %s, %s, now() - %s * interval '1 hour')",
                    (*key, n + 1),
                )
            if live:
                conn.execute(
                    "INSERT INTO cmis.platform_connections (org_id, platform, account_id)"
                    " VALUES (%s, %s, %s)",
                    key,
                )
            initial_rows[key] = deleted + int(live)
    assert set(initial_rows.values()) == {0, 1, 2}
    assert all(initial_rows[k] <= 1 for k in ours_insert_only)
    return Plan(keys, ours_insert_only, mixed, initial_rows)


def byte_order(key: Key) -> tuple[bytes, bytes]:
    """The order in which the bulk call takes keys' locks (COLLATE "C")."""
    return key.platform.encode(), key.account_id.encode()


def _bind(fn: Callable[..., Report], *args: Any) -> Callable[[], Report]:
    return lambda: fn(*args)


def stress(
    session: Callable[..., Conn],
    monitor: Conn,
    org_id: uuid.UUID,
    other_org_id: uuid.UUID,
    *,
    app_patterns: list[str],
    disconnect_first: bool = False,
    duration: float = 4.0,
) -> None:
    """11 threads for ``duration`` seconds on 32 keys of 2 orgs, and a checker.

    Our 4 bulk workers run, each in one transaction: a bulk call of a random subset of an
    org's keys in random order; or bulk, then our soft_delete of some of the rows it
    returned, then a bulk call that must restore exactly those rows (the transaction holds
    the org lock exclusively from its first call, and the rows it soft-deleted, so that is
    sound); and, with ``disconnect_first``, our soft_delete of live keys BEFORE the bulk
    call that reconnects them (the lock-upgrade case). Our 3 single workers upsert,
    soft-delete, and disconnect + reconnect one key in one transaction. The app's 4
    workers run ``app_patterns``: "insert" (INSERT ... ON CONFLICT DO NOTHING, keys it
    shares with us only), "soft_delete" (plain UPDATE of the live row), "restore" (plain
    UPDATE of the newest deleted row, any key); its errors are counted apart and may only
    be unique violations.

    Why the row-count assertions are sound: no row is ever hard-deleted here, so a key's
    rows only grow, by INSERTs: ours (reported as 'created') and the app's (its INSERT
    returned a row), counted once committed. Hence at the end
    rows = initial + ours_created + app_inserted, for every key. Our calls may create a
    row only when the key has no row at all: otherwise it has a live row to update or a
    deleted one to restore (and an app's uncommitted live row makes our INSERT wait for
    it and update it). Rows never go away, so "no row" holds for a key only until its
    first committed row: a key that starts with rows must get none from us, and one that
    starts empty at most one. On keys the app never inserts: at most one row, ever.
    """
    seed = random.randrange(1 << 30)  # noqa: S311 - test data, not secrets
    print(f"\nbulk stress seed {seed}, app {app_patterns}, disconnect_first={disconnect_first}")
    plan = make_plan(monitor, org_id, other_org_id)
    checker = Checker(session(autocommit=True), plan.ours_insert_only)
    n_bulk, n_single = 4, 2
    n_threads = n_bulk + n_single + len(app_patterns)
    start = threading.Barrier(n_threads, timeout=JOIN_TIMEOUT)
    orgs = [org_id, org_id, org_id, other_org_id]  # org 1 three times as often
    mixed = sorted(plan.mixed)
    every_key = sorted(plan.mixed | plan.ours_insert_only)

    def count_bulk(report: Report, keys: list[Key], results: list[tuple[str, uuid.UUID]]):
        for key, (outcome, _) in zip(keys, results, strict=True):
            report.calls[f"bulk:{outcome}"] += 1
            report.ours_created[key] += outcome == "created"

    def expect_restored(
        report: Report, keys: list[Key], results: list[Any], gone: dict[Key, uuid.UUID]
    ) -> None:
        """Keys whose row this transaction soft-deleted (and holds) must get that row back."""
        for key, (outcome, row) in zip(keys, results, strict=True):
            if key in gone and (outcome, row) != ("restored", gone[key]):
                report.created_instead.append(
                    f"{report.name}: {key} gave {outcome} {row}, not its row {gone[key]}"
                )

    def ours_bulk(report: Report, conn: Conn, rng: random.Random) -> Report:
        def fields() -> dict[str, Any]:
            chosen: dict[str, Any] = {"access_token": f"tok{rng.random()}"}
            status = rng.choice(["absent", "active", "warning", None])
            if status != "absent":
                chosen["status"] = status
            if rng.random() < 0.3:
                chosen["sync_frequency_minutes"] = rng.randint(1, 60)
            return chosen

        def some(keys: list[Key], at_least: int, also: list[Key]) -> list[Key]:
            chosen = list(
                dict.fromkeys([*also, *rng.sample(keys, rng.randint(at_least, len(keys)))])
            )
            rng.shuffle(chosen)
            return chosen

        def step() -> None:
            org = rng.choice(orgs)
            org_keys = plan.keys[org]
            kinds = ["bulk", "bulk, disconnect, bulk"]
            if disconnect_first:
                kinds.append("disconnect, bulk")
            kind = rng.choice(kinds)
            done: list[tuple[list[Key], list[tuple[str, uuid.UUID]]]] = []
            gone: dict[Key, uuid.UUID] = {}
            with conn.transaction():
                if kind == "disconnect, bulk":
                    # Keys in byte order, as the bulk call then takes the locks of the
                    # others: two transactions that each hold a key the other asks for
                    # would deadlock whatever the functions do (see "Several keys in one
                    # transaction" in the README).
                    disconnect = sorted(rng.sample(org_keys, 2), key=byte_order)
                    for key in disconnect:
                        target = live_id(conn, key)
                        if target is not None and soft_delete(conn, org, target) == target:
                            gone[key] = target
                    after = [k for k in org_keys if byte_order(k) > byte_order(disconnect[-1])]
                    batch = list(gone) + some(after, 0, []) if after else list(gone)
                    if not batch:
                        batch = disconnect[-1:]
                    results = bulk(conn, org, batch, **fields())
                    expect_restored(report, batch, results, gone)
                    done.append((batch, results))
                else:
                    batch = some(org_keys, 1, [])
                    results = bulk(conn, org, batch, **fields())
                    done.append((batch, results))
                    if kind == "bulk, disconnect, bulk":
                        for i in rng.sample(range(len(batch)), min(3, len(batch))):
                            row = results[i][1]
                            # Ours for sure: this transaction holds the org and the row.
                            assert soft_delete(conn, org, row) == row
                            gone[batch[i]] = row
                        again = some(org_keys, 0, list(gone))
                        results = bulk(conn, org, again, **fields())
                        expect_restored(report, again, results, gone)
                        for key, (outcome, _) in zip(again, results, strict=True):
                            if key in batch and key not in gone:  # live, and held by us
                                assert outcome == "updated", (key, outcome)
                        done.append((again, results))
            report.calls[f"transaction:{kind}"] += 1
            for keys, results in done:
                count_bulk(report, keys, results)
            checker.check(conn, f"after {report.name}'s commit")

        return run_loop(report, start, duration, step)

    def ours_single(report: Report, conn: Conn, rng: random.Random) -> Report:
        def step() -> None:
            key = rng.choice(plan.keys[rng.choice(orgs)])
            roll = rng.random()
            if roll < 0.5:
                outcome, _ = upsert(conn, key, f"tok{rng.random()}")
                report.calls[f"upsert:{outcome}"] += 1
                report.ours_created[key] += outcome == "created"
            elif roll < 0.8:
                target = live_id(conn, key)
                if target is not None:
                    deleted = soft_delete(conn, key.org_id, target)
                    report.calls["soft_delete:" + ("deleted" if deleted else "nothing")] += 1
            else:
                with conn.transaction():
                    target = live_id(conn, key)
                    deleted = None if target is None else soft_delete(conn, key.org_id, target)
                    outcome, row = upsert(conn, key)
                    if deleted is not None:
                        assert (outcome, row) == ("restored", deleted)
                report.calls[f"reconnect:{outcome}"] += 1
                report.ours_created[key] += outcome == "created"
            checker.check(conn, f"after {report.name}'s commit")

        return run_loop(report, start, duration, step)

    def app(report: Report, conn: Conn, pattern: str, rng: random.Random) -> Report:
        statement = {"insert": APP_INSERT, "soft_delete": APP_SOFT_DELETE, "restore": APP_RESTORE}

        def step() -> None:
            key = rng.choice(mixed if pattern == "insert" else every_key)
            try:
                row = conn.execute(statement[pattern], key).fetchone()  # autocommit
            except psycopg.Error as error:
                report.app_errors[f"{pattern} {error.sqlstate} {type(error).__name__}"] += 1
                return
            report.calls[f"app {pattern}:{'done' if row else 'nothing'}"] += 1
            if pattern == "insert" and row is not None:
                report.app_inserted[key] += 1

        return run_loop(report, start, duration, step)

    workers: list[tuple[Report, Callable[[], Report]]] = []
    for number in range(n_threads):
        rng = random.Random(seed + number)  # noqa: S311
        conn = session(autocommit=True)
        if number < n_bulk + n_single:
            # A deadlock our calls take part in is detected in 100 ms, ours the victim.
            conn.execute("SET deadlock_timeout = '100ms'")
        if number < n_bulk:
            report = Report(f"ours-bulk-{number}")
            workers.append((report, _bind(ours_bulk, report, conn, rng)))
        elif number < n_bulk + n_single:
            report = Report(f"ours-single-{number}")
            workers.append((report, _bind(ours_single, report, conn, rng)))
        else:
            pattern = app_patterns[number - n_bulk - n_single]
            report = Report(f"app-{pattern}-{number}")
            workers.append((report, _bind(app, report, conn, pattern, rng)))

    tasks = [Background(report.name, fn) for report, fn in workers]
    checker_task = Background("checker", checker.run)
    started = time.monotonic()
    checker_task.start()
    for task in tasks:
        task.start()
    try:
        total = merge([task.result() for task in tasks])
    finally:
        checker.stop.set()
        for task in tasks:
            task.wait(JOIN_TIMEOUT)
        checker_task.wait(JOIN_TIMEOUT)
    elapsed = time.monotonic() - started
    checker_task.result()

    final = {Key(o, p, a): (live, rows) for o, p, a, live, rows in monitor.execute(Checker.SQL)}
    created_where_rows_were = {
        key: total.ours_created[key]
        for key in every_key
        if total.ours_created[key] > (0 if plan.initial_rows[key] else 1)
    }
    lines = [f"bulk stress: {elapsed:.1f}s, {checker.checks} checks"]
    lines += [f"  {name}: {count}" for name, count in sorted(total.calls.items())]
    lines += [f"  app error {name}: {count}" for name, count in sorted(total.app_errors.items())]
    lines.append(f"  errors from our functions: {len(total.errors)}")
    lines.append(f"  deadlocks: {len(total.deadlocks)}")
    lines.append(f"  rows created by us where rows were: {sum(created_where_rows_were.values())}")
    lines.append(f"  own soft-deleted rows not restored: {len(total.created_instead)}")
    print("\n".join(lines))

    # 1. Never two live rows; the app fails on nothing but the unique index; the table
    #    holds exactly the rows the committed inserts made.
    assert not checker.two_live, "\n".join(checker.two_live[:20])
    for key in every_key:
        live, rows = final.get(key, (0, 0))
        assert live <= 1, key
        expected = plan.initial_rows[key] + total.ours_created[key] + total.app_inserted[key]
        assert rows == expected, (
            f"{key}: {rows} rows, expected {plan.initial_rows[key]} initial"
            f" + {total.ours_created[key]} ours + {total.app_inserted[key]} app"
        )
        if key in plan.ours_insert_only:
            assert total.app_inserted[key] == 0
    assert all(" 23505 " in name for name in total.app_errors), total.app_errors
    # 2. No error from our functions (or from our in-transaction assertions).
    assert not total.errors, "our functions raised:\n" + "\n".join(total.errors)
    # 3. No deadlock (ours are the victims of any deadlock we take part in).
    if total.deadlocks:
        raise DeadlockSeen(f"{len(total.deadlocks)} deadlock(s), the first:\n{total.deadlocks[0]}")
    # 4. No row created by us for a key that had one (see the docstring).
    if created_where_rows_were or checker.two_rows or total.created_instead:
        raise CreatedInsteadOfRestoring(
            f"created by us for keys that had rows: {created_where_rows_were}\n"
            + "\n".join(total.created_instead[:5] + checker.two_rows[:5])
        )
    # 5. The run did what it is for.
    assert checker.checks > 50
    for name in ("bulk:restored", "bulk:updated", "transaction:bulk, disconnect, bulk"):
        assert total.calls[name] > 0, name
    for pattern in app_patterns:
        assert total.calls[f"app {pattern}:done"] > 0, pattern
    assert elapsed < duration + 15


#: The app's workers when it only disconnects: it never makes a key live behind our back.
APP_DISCONNECTS_ONLY = ["soft_delete", "soft_delete", "soft_delete", "soft_delete"]
#: All three of the app's patterns.
APP_EVERYTHING = ["insert", "soft_delete", "restore", "insert", "restore", "soft_delete"]


@pytest.mark.slow
def test_stress_bulk_single_calls_and_app_disconnects(session, monitor, org_id, other_org_id):
    """Bulk and single calls of ours with the app's plain soft deletes."""
    stress(session, monitor, org_id, other_org_id, app_patterns=APP_DISCONNECTS_ONLY)


@pytest.mark.slow
def test_stress_bulk_single_calls_and_all_app_sql(session, monitor, org_id, other_org_id):
    """The app also inserts and restores: the bulk call's undelete meets unique violations."""
    stress(session, monitor, org_id, other_org_id, app_patterns=APP_EVERYTHING)


@pytest.mark.slow
def test_stress_with_disconnects_before_the_bulk_call(session, monitor, org_id, other_org_id):
    """As the brief designs it: some bulk calls follow our soft deletes in their transaction
    (the lock-upgrade case, fixed)."""
    stress(
        session, monitor, org_id, other_org_id, app_patterns=APP_EVERYTHING, disconnect_first=True
    )
