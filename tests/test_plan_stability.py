"""Plans that do not depend on statistics, nor on how many calls a
connection has made: a cliff guard (10x), not a benchmark (bench/warm.py
measures the ratios).

Seen before: a second sync of 5,000 accounts took 3.4 s before the table was
analyzed (0.11 s after), and a 5,000-row bulk call took 3 s on a connection
that had made 6 small bulk calls (0.17 s on a fresh one): PL/pgSQL switched
to a generic plan, which joined the input to the table the quadratic way.
"""

from __future__ import annotations

import time
import uuid

import pytest

from cmis_repo import ConnectionInput, PlatformConnectionRepository
from tests.support.orgs import make_org

#: A call may be this many times slower than its baseline before it is a cliff.
CLIFF = 10
SIZE = 5000


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _batch(prefix: str) -> list[ConnectionInput]:
    return [ConnectionInput("meta", f"{prefix}_{n}", account_name="x") for n in range(SIZE)]


@pytest.fixture
def unanalyzed(db, connect):
    """An autocommit connection to a table autovacuum will not analyze."""
    db.execute("ALTER TABLE cmis.platform_connections SET (autovacuum_enabled = false)")
    db.commit()
    return connect(autocommit=True)


def _has_statistics(conn) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stats"
        " WHERE schemaname = 'cmis' AND tablename = 'platform_connections'"
    ).fetchone()
    return bool(row[0])


@pytest.mark.slow
def test_a_second_sync_before_analyze_is_no_slower_than_after(db, unanalyzed):
    org_id = make_org(db)
    repo = PlatformConnectionRepository(unanalyzed)
    repo.upsert_many(org_id, _batch("act"))  # the first sync creates them
    assert not _has_statistics(unanalyzed)
    before = min(_timed(lambda: repo.upsert_many(org_id, _batch("act"))) for _ in range(2))
    unanalyzed.execute(
        "UPDATE cmis.platform_connections SET deleted_at = now() WHERE account_id LIKE '%%7'"
    )
    restoring = _timed(lambda: repo.upsert_many(org_id, _batch("act")))
    assert not _has_statistics(unanalyzed)
    unanalyzed.execute("ANALYZE cmis.platform_connections")
    after = min(_timed(lambda: repo.upsert_many(org_id, _batch("act"))) for _ in range(2))
    assert before < CLIFF * after, f"before ANALYZE {before:.3f} s, after {after:.3f} s"
    assert restoring < CLIFF * after, f"restoring before ANALYZE {restoring:.3f} s"


@pytest.mark.slow
@pytest.mark.parametrize("analyzed", [False, True], ids=["unanalyzed", "analyzed"])
def test_a_warm_connection_is_no_slower_than_a_fresh_one(db, unanalyzed, connect, analyzed):
    org_id = make_org(db)
    if analyzed:
        PlatformConnectionRepository(unanalyzed).upsert_many(org_id, _batch("seed"))
        unanalyzed.execute("ANALYZE cmis.platform_connections")
    warm = PlatformConnectionRepository(connect(autocommit=True))
    for n in range(8):  # past the five custom plans PL/pgSQL makes before a generic one
        warm.upsert_many(org_id, [ConnectionInput("google", f"g_{n}_{j}") for j in range(3)])
    warm_create = _timed(lambda: warm.upsert_many(org_id, _batch("warm")))
    warm_update = _timed(lambda: warm.upsert_many(org_id, _batch("warm")))
    fresh_create = _timed(
        lambda: PlatformConnectionRepository(connect(autocommit=True)).upsert_many(
            org_id, _batch("fresh")
        )
    )
    fresh_update = _timed(
        lambda: PlatformConnectionRepository(connect(autocommit=True)).upsert_many(
            org_id, _batch("fresh")
        )
    )
    assert warm_create < CLIFF * fresh_create, (warm_create, fresh_create)
    assert warm_update < CLIFF * fresh_update, (warm_update, fresh_update)


@pytest.mark.slow
def test_the_hundredth_single_call_costs_what_the_first_did(db, unanalyzed):
    org_id = make_org(db)
    repo = PlatformConnectionRepository(unanalyzed)
    accounts = [f"act_{uuid.uuid4().hex[:8]}" for _ in range(120)]
    times = [_timed(lambda a=a: repo.upsert(org_id, "meta", a)) for a in accounts]
    first, hundredth = sorted(times[:10])[5], sorted(times[100:110])[5]
    assert hundredth < CLIFF * first, (first, hundredth)
