"""The lock table is shared by every database of the server: no call of ours
may fill it. Seen: a bulk call after a single-key write in the same
transaction took one advisory lock per key, and 30,000 keys made sessions of
other databases fail with 53200 (out of shared memory)."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from cmis_repo import ConnectionInput, PlatformConnectionRepository

KEYS = 30_000


def _advisory_locks_of(monitor, pid: int) -> int:
    row = monitor.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'", (pid,)
    ).fetchone()
    return int(row[0])


class Bystander(threading.Thread):
    """A session of another database taking 100 locks per transaction, over and
    over, until stopped: it must never see an error."""

    def __init__(self, conninfo: str):
        super().__init__(name="bystander")
        self.conninfo = conninfo
        self.stop = threading.Event()
        self.transactions = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self.conninfo) as conn:
            while not self.stop.is_set() or self.transactions == 0:
                try:
                    conn.execute(
                        "SELECT count(pg_advisory_xact_lock(n)) FROM generate_series(1, 100) AS n"
                    )
                    conn.rollback()
                    self.transactions += 1
                except psycopg.Error as error:
                    self.errors.append(f"{error.sqlstate}: {error}")
                    conn.rollback()


@pytest.mark.slow
def test_a_bulk_call_after_a_single_write_never_fills_the_lock_table(
    db, session, monitor, org_id, blank_database
):
    repo = PlatformConnectionRepository(db)
    first = repo.upsert(org_id, "meta", "act_0").connection
    db.commit()
    t = session()
    assert PlatformConnectionRepository(t).soft_delete(org_id, first.connection_id)
    held = _advisory_locks_of(monitor, t.info.backend_pid)
    elements = [{"platform": "meta", "account_id": f"act_{n}"} for n in range(KEYS)]

    bystander = Bystander(blank_database)
    bystander.start()
    try:
        with pytest.raises(errors.ProgramLimitExceeded) as refused:
            t.execute(
                "SELECT count(*) FROM cmis.upsert_platform_connections(%s, %s)",
                (org_id, Jsonb(elements)),
            )
        # The error ended the transaction's work: it holds nothing more than before.
        assert _advisory_locks_of(monitor, t.info.backend_pid) <= held
    finally:
        bystander.stop.set()
        bystander.join(60)
    t.rollback()
    assert bystander.errors == []
    message = refused.value.diag.message_primary or ""
    assert "30000" in message
    assert "max_locks_per_transaction" in (refused.value.diag.message_hint or "") + message


def test_below_the_limit_the_keys_are_locked_and_written(db, session, monitor, org_id):
    limit = int(monitor.execute("SHOW max_locks_per_transaction").fetchone()[0])
    repo = PlatformConnectionRepository(db)
    first = repo.upsert(org_id, "meta", "act_0").connection
    db.commit()
    t = session()
    t_repo = PlatformConnectionRepository(t)
    assert t_repo.soft_delete(org_id, first.connection_id)
    results = t_repo.upsert_many(
        org_id, [ConnectionInput("meta", f"act_{n}") for n in range(limit)]
    )
    assert [r.outcome.value for r in results[:2]] == ["restored", "created"]
    t.commit()
