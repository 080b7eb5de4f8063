"""A psycopg_pool pool shared by several organisations, as the application's
login role under row-level security: no organisation reaches the next
borrower of a connection, and no connection goes back in a transaction, even
after an error."""

from __future__ import annotations

import threading
import uuid

import pytest
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from cmis_repo import InvalidInputError, PlatformConnectionRepository
from tests.support.orgs import make_org

ORG_SETTING = "SELECT current_setting('app.current_org_id', true)"


@pytest.mark.slow
def test_organisations_sharing_a_pool_never_meet(db, conninfo, app_login):
    orgs = [make_org(db, f"org {n}") for n in range(3)]
    errors: list[str] = []
    refused = 0
    lock = threading.Lock()

    def borrower(worker: int, pool: ConnectionPool) -> None:
        nonlocal refused
        org_id = orgs[worker % 3]
        try:
            for n in range(40):
                try:
                    with pool.connection() as conn:  # commits, or rolls back on an error
                        assert conn.info.transaction_status is TransactionStatus.IDLE
                        assert conn.execute(ORG_SETTING).fetchone() in ((None,), ("",))
                        repo = PlatformConnectionRepository(conn)
                        repo.upsert(org_id, "meta", f"w{worker}_{n % 5}")
                        assert {row.org_id for row in repo.list(org_id)} == {org_id}
                        if n % 7 == 3:  # an error in the middle of the transaction
                            repo.upsert(org_id, "meta", "act", status="paused")
                except InvalidInputError:
                    with lock:
                        refused += 1
        except Exception as error:  # reported by the test
            with lock:
                errors.append(f"worker {worker}: {type(error).__name__}: {error}")

    with ConnectionPool(
        conninfo, kwargs={"user": app_login}, min_size=2, max_size=3, open=True
    ) as pool:
        workers = [threading.Thread(target=borrower, args=(n, pool)) for n in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        for _ in range(3):
            with pool.connection() as conn:
                assert conn.info.transaction_status is TransactionStatus.IDLE
                assert conn.execute(ORG_SETTING).fetchone() in ((None,), ("",))
    assert errors == []
    assert refused == 8 * 6
    counts = db.execute(
        "SELECT org_id, count(*) FROM cmis.platform_connections GROUP BY org_id"
    ).fetchall()
    assert {org for org, _ in counts} <= set(orgs)
    assert uuid.UUID(int=0) not in {org for org, _ in counts}
