"""Benchmark: restore-or-create through cmis-repo vs the app's own two-step SQL.

Run: ``make bench`` (or ``.venv/bin/python -m bench.upsert --iterations 2000``).

It creates (and drops) a scratch database ``cmis_bench`` on the server that
``$DATABASE_URL`` or libpq's defaults name, migrates it, seeds background rows,
then times each scenario on one autocommit connection, the baseline and ours
in the same run, alternating in rounds so that drift hits both alike. It prints
per-call times and the ratio ours / baseline (below 1 means cmis-repo is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from cmis_repo import PlatformConnectionRepository
from cmis_repo.database import connect, conninfo_from_env, with_dbname
from cmis_repo.migrate import migrate
from cmis_repo.queries import parse

SQL = parse((Path(__file__).with_name("app_baseline.sql")).read_text("utf-8"))


class App:
    """The app's fixed controller: find including deleted, then update or insert."""

    def __init__(self, conn: psycopg.Connection[Any], org_id: uuid.UUID) -> None:
        self.conn, self.org_id = conn, org_id

    def connect(self, platform: str, account_id: str) -> None:
        key = {"org_id": self.org_id, "platform": platform, "account_id": account_id}
        found = self.conn.execute(SQL["find_any"], key).fetchone()
        if found is None:
            self.conn.execute(SQL["insert"], {**key, "access_token": "tok"})
        else:
            self.conn.execute(
                SQL["update_by_id"], {"connection_id": found[0], "access_token": "tok"}
            )

    def disconnect(self, platform: str, account_id: str) -> None:
        key = {"org_id": self.org_id, "platform": platform, "account_id": account_id}
        self.conn.execute(SQL["soft_delete"], key)


class Ours:
    def __init__(self, conn: psycopg.Connection[Any], org_id: uuid.UUID) -> None:
        self.repo, self.org_id = PlatformConnectionRepository(conn), org_id

    def connect(self, platform: str, account_id: str) -> uuid.UUID:
        result = self.repo.upsert(self.org_id, platform, account_id, access_token="tok")
        return result.connection.connection_id

    def disconnect(self, connection_id: uuid.UUID) -> None:
        self.repo.soft_delete(self.org_id, connection_id)


def per_call_us(action: Callable[[int], object], iterations: int) -> float:
    start = time.perf_counter()
    for i in range(iterations):
        action(i)
    return (time.perf_counter() - start) / iterations * 1e6


def run(conninfo: str, iterations: int, rounds: int, seed_rows: int) -> None:
    org_id = uuid.uuid4()
    with connect(conninfo, autocommit=True) as conn:
        conn.execute(SQL["create_org"], {"org_id": org_id})
        conn.execute(SQL["seed"], {"org_id": org_id, "rows": seed_rows})
        conn.execute(SQL["analyze"])
        app, ours = App(conn, org_id), Ours(conn, org_id)

        # Keys live for "update", deleted for "reconnect"; fresh ones for "create".
        for i in range(iterations):
            app.connect("app", f"u{i}")
            ours.connect("ours", f"u{i}")
        ids = [ours.connect("ours", f"r{i}") for i in range(iterations)]
        for i in range(iterations):
            app.connect("app", f"r{i}")

        results: dict[str, tuple[list[float], list[float]]] = {
            "update a live row": ([], []),
            "disconnect + reconnect (restore)": ([], []),
            "create a new row": ([], []),
        }
        for r in range(rounds):
            timings = results["update a live row"]
            timings[0].append(per_call_us(lambda i: app.connect("app", f"u{i}"), iterations))
            timings[1].append(per_call_us(lambda i: ours.connect("ours", f"u{i}"), iterations))

            def app_cycle(i: int) -> None:
                app.disconnect("app", f"r{i}")
                app.connect("app", f"r{i}")

            def our_cycle(i: int) -> None:
                ours.disconnect(ids[i])
                ours.connect("ours", f"r{i}")

            timings = results["disconnect + reconnect (restore)"]
            timings[0].append(per_call_us(app_cycle, iterations))
            timings[1].append(per_call_us(our_cycle, iterations))

            timings = results["create a new row"]
            prefix = f"c{r}_"
            timings[0].append(
                per_call_us(lambda i: app.connect("app", prefix + str(i)), iterations)
            )
            timings[1].append(
                per_call_us(lambda i: ours.connect("ours", prefix + str(i)), iterations)
            )

    print(f"{iterations} calls x {rounds} rounds per scenario, {seed_rows} background rows")
    print(f"{'scenario':<34} {'app SQL µs':>11} {'cmis-repo µs':>13} {'ratio':>6}")
    for name, (baseline, mine) in results.items():
        b, m = statistics.median(baseline), statistics.median(mine)
        print(f"{name:<34} {b:>11.1f} {m:>13.1f} {m / b:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed-rows", type=int, default=100_000)
    args = parser.parse_args()

    admin = conninfo_from_env()
    with connect(admin, autocommit=True) as conn:
        conn.execute(SQL["drop_database"])
        conn.execute(SQL["create_database"])
    bench_db = with_dbname(admin, "cmis_bench")
    try:
        migrate(bench_db)
        run(bench_db, args.iterations, args.rounds, args.seed_rows)
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(SQL["drop_database"])


if __name__ == "__main__":
    main()
