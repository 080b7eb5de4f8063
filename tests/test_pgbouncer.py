"""Behind a real PgBouncer in transaction mode (Debian's 1.18: no prepared
statements): every call runs its own statement, answers right, and no
organisation reaches another client's transaction, while pgbouncer replaces
its server connections under the clients."""

from __future__ import annotations

import random
import threading
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from cmis_repo import ConnectionLostError, Outcome, PlatformConnectionRepository
from cmis_repo.errors import translate
from tests.support.orgs import make_org
from tests.support.pgbouncer import APPLICATION_NAME, PgBouncer, pgbouncer


@pytest.fixture(params=[1, 4], ids=["pool1", "pool4"])
def bouncer(request, pg_server, db) -> Iterator[PgBouncer]:
    with pgbouncer(
        pg_server.host,
        pg_server.port,
        pg_server.user,
        pool_size=request.param,
        databases=(db.info.dbname,),
    ) as running:
        yield running


def _through(bouncer: PgBouncer, dbname: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(bouncer.conninfo(dbname), **kwargs)


def test_a_call_never_runs_a_statement_another_client_prepared(db, bouncer, org_id):
    """Seen: A's soft_delete prepared as _pg3_0; pgbouncer replaced the server
    connection; B's restore became _pg3_0 there; A's next soft_delete ran B's
    restore and returned True while the account stayed connected."""
    dbname = db.info.dbname
    setup = PlatformConnectionRepository(db)
    ids = [setup.upsert(org_id, "meta", f"act_{n}").connection.connection_id for n in range(12)]
    db.commit()
    with (
        _through(bouncer, dbname, autocommit=True) as a,
        _through(bouncer, dbname, autocommit=True) as b,
    ):
        repo_a, repo_b = PlatformConnectionRepository(a), PlatformConnectionRepository(b)
        for connection_id in ids[:8]:  # enough calls for psycopg to prepare the statement
            assert repo_a.soft_delete(org_id, connection_id)
        bouncer.admin("RECONNECT")  # a new server connection, as after server_lifetime
        for connection_id in ids[:8]:
            assert not repo_b.restore(org_id, connection_id).is_deleted
        assert repo_a.soft_delete(org_id, ids[10])
        row = repo_b.get(org_id, ids[10], include_deleted=True)
        assert row is not None
        assert row.is_deleted, "soft_delete said True, the row is live"


@dataclass
class Tally:
    calls: int = 0
    lost: int = 0
    replaced: int = 0
    why: list[str] = field(default_factory=list)
    backends: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    done: bool = False

    def count(self, *, lost: bool = False) -> None:
        with self.lock:
            self.calls += not lost
            self.lost += lost
            self.lock.notify_all()

    def wait_for_calls(self, calls: int) -> bool:
        """Wait until the clients made ``calls`` calls; False once they are done."""
        with self.lock:
            self.lock.wait_for(lambda: self.done or self.calls + self.lost >= calls)
            return not self.done


def _client(
    bouncer: PgBouncer,
    dbname: str,
    org_id: uuid.UUID,
    prefix: str,
    rounds: int,
    tally: Tally,
    seed: int,
) -> None:
    """Connect, disconnect and reconnect the client's own accounts, checking
    every answer against what it did; every other round in a transaction of
    its own that must see no other client's organisation."""
    rng = random.Random(seed)  # noqa: S311 - a test schedule, not a secret
    live: dict[str, uuid.UUID] = {}
    deleted: dict[str, uuid.UUID] = {}
    conn = _through(bouncer, dbname, autocommit=True)
    try:
        for n in range(rounds):
            account = f"{prefix}_{rng.randrange(4)}"
            in_transaction = n % 2 == 1
            try:
                conn.autocommit = not in_transaction
                if in_transaction:
                    setting = conn.execute(
                        "SELECT current_setting('app.current_org_id', true)", prepare=False
                    ).fetchone()
                    assert setting in ((None,), ("",)), f"a new transaction acts for {setting}"
                repo = PlatformConnectionRepository(conn)
                if account in live and rng.random() < 0.5:
                    assert repo.soft_delete(org_id, live[account]), "soft_delete of a live row"
                    deleted[account] = live.pop(account)
                else:
                    result = repo.upsert(org_id, "meta", account, account_name=prefix)
                    row = result.connection
                    assert (row.org_id, row.account_id) == (org_id, account)
                    if account in live:
                        assert result.outcome is Outcome.UPDATED
                        assert row.connection_id == live[account]
                    elif account in deleted:
                        assert result.outcome is Outcome.RESTORED
                        assert row.connection_id == deleted.pop(account)
                    else:
                        assert result.outcome is Outcome.CREATED
                    live[account] = row.connection_id
                mine = [r for r in repo.list(org_id) if r.account_id.startswith(prefix)]
                assert {r.org_id for r in repo.list(org_id)} <= {org_id}
                assert {r.account_id: r.connection_id for r in mine} == live
                if in_transaction:
                    setting = conn.execute(
                        "SELECT current_setting('app.current_org_id', true), pg_backend_pid()",
                        prepare=False,
                    ).fetchone()
                    assert setting is not None
                    assert setting[0] == str(org_id)
                    tally.backends.add(setting[1])
                    conn.commit()
                tally.count()
            except ConnectionLostError as error:
                lost = True
                tally.why.append(str(error))
            except psycopg.Error as error:
                # The test's own statements (BEGIN, COMMIT, the setting): a
                # killed server connection, and only that, may fail them (by
                # the repository's own rule, even when psycopg has not yet
                # marked the connection broken: "connection socket closed").
                if not isinstance(translate(error, broken=conn.broken), ConnectionLostError):
                    raise
                lost = True
                tally.why.append(f"{type(error).__name__}: {error}")
            else:
                lost = False
            if lost:
                # The connection died under the call: its outcome is unknown.
                # Start again from what the database holds.
                tally.count(lost=True)
                conn.close()
                conn, live, deleted = _resync(bouncer, dbname, org_id, prefix)
    except Exception as error:  # reported by the test, with the client's name
        with tally.lock:
            tally.errors.append(
                f"{prefix}: {type(error).__name__}: {error}\n{traceback.format_exc()}"
            )
    finally:
        conn.close()


def _resync(
    bouncer: PgBouncer, dbname: str, org_id: uuid.UUID, prefix: str
) -> tuple[psycopg.Connection[Any], dict[str, uuid.UUID], dict[str, uuid.UUID]]:
    """A new connection, and the client's accounts as the database holds them."""
    for _ in range(100):
        try:
            # pgbouncer may close a new client whose server login was killed.
            conn = _through(bouncer, dbname, autocommit=True)
        except psycopg.OperationalError:
            continue
        try:
            rows = PlatformConnectionRepository(conn).list(org_id, include_deleted=True)
        except ConnectionLostError:
            conn.close()
            continue
        mine = [r for r in rows if r.account_id.startswith(prefix)]
        live = {r.account_id: r.connection_id for r in mine if not r.is_deleted}
        deleted: dict[str, uuid.UUID] = {}
        for r in sorted(mine, key=lambda r: r.deleted_at or r.created_at):
            if r.is_deleted and r.account_id not in live:
                deleted[r.account_id] = r.connection_id
        return conn, live, deleted
    raise AssertionError("no connection lived long enough to read the rows back")


def _kill_server_connections(admin_conn, tally, every=10):
    """Every ``every`` calls of the clients, kill pgbouncer's server
    connections. Paced by the clients' progress: pgbouncer 1.18 holds back
    new logins for server_login_retry after one was cut short."""
    calls = 0
    while tally.wait_for_calls(calls + every):
        calls = tally.calls + tally.lost
        killed = admin_conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (APPLICATION_NAME,),
        ).fetchone()
        tally.replaced += killed[0]


@pytest.mark.slow
@pytest.mark.parametrize("pool_size", [1, 4])
@pytest.mark.parametrize("how", ["lifetime", "terminate"])
def test_many_clients_of_several_organisations(db, pg_server, connect, pool_size, how):
    """8 clients of 3 organisations over one pgbouncer whose server
    connections are replaced all along, by pgbouncer (server_lifetime 50 ms)
    or killed under it (pg_terminate_backend): every answer right, no
    organisation seen in another's transaction, no error at all when
    pgbouncer replaces them; a killed connection may fail the call on it, as
    ConnectionLostError only."""
    orgs = [make_org(db, f"org {n}") for n in range(3)]
    admin_conn = connect(autocommit=True)
    tally = Tally()
    with pgbouncer(
        pg_server.host,
        pg_server.port,
        pg_server.user,
        pool_size=pool_size,
        databases=(db.info.dbname,),
        settings={"server_lifetime": 0.05} if how == "lifetime" else None,
    ) as bouncer:
        killer = threading.Thread(target=_kill_server_connections, args=(admin_conn, tally))
        clients = [
            threading.Thread(
                target=_client,
                args=(bouncer, db.info.dbname, orgs[n % 3], f"c{n}", 60, tally, n),
            )
            for n in range(8)
        ]
        if how == "terminate":
            killer.start()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
        with tally.lock:
            tally.done = True
            tally.lock.notify_all()
        if how == "terminate":
            killer.join()
    assert tally.errors == []
    if how == "lifetime":
        assert tally.why == []
        assert len(tally.backends) > 4 * pool_size, "pgbouncer did not replace connections"
    else:
        assert tally.replaced > 5
    assert tally.calls + tally.lost == 8 * 60
    live = db.execute(
        "SELECT count(*) FROM cmis.platform_connections WHERE deleted_at IS NULL"
        " GROUP BY org_id, platform, account_id HAVING count(*) > 1"
    ).fetchall()
    assert live == []
