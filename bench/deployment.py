"""Benchmark: the calls as they are deployed, against the same calls in the lab, one run.

Run: ``make bench`` runs it with the others; alone: ``.venv/bin/python -m bench.deployment``
(``--rounds``, ``--rows``). About two minutes.

Ratios, each against a baseline measured in the same run (above 1: slower
than the baseline):

- **warm vs fresh connection.** ``repo.upsert`` (an update of a live key): the
  median of calls 96-100 of a connection against calls 2-5 (call 1 also
  compiles the function in that backend: reported apart). ``repo.upsert_many``
  of ``--rows`` keys: on a connection that made 99 small bulk calls (PL/pgSQL
  plans are generic after five) against a fresh connection.
- **before vs after ANALYZE.** The second sync of ``--rows`` keys on a table
  autovacuum has not analyzed yet, against the same sync after ANALYZE.
- **PgBouncer vs direct.** ``repo.upsert`` through Debian's pgbouncer in
  transaction mode (pool size 1) against a direct connection, one client.
- **prepared vs not.** The repository's upsert statement with psycopg's
  prepared statements (the default before: prepared after five runs) against
  ``prepare=False`` (what the repository does, safe behind any pooler).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.dataset import scratch_database
from cmis_repo import ConnectionInput, PlatformConnectionRepository
from cmis_repo.database import connect
from cmis_repo.queries import query
from tests.support.pgbouncer import pgbouncer

RESULTS = Path(__file__).with_name("results") / "deployment.json"


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def new_org(conn: psycopg.Connection[Any]) -> uuid.UUID:
    org_id = uuid.uuid4()
    conn.execute("INSERT INTO cmis.orgs (org_id, name) VALUES (%s, 'bench')", (org_id,))
    return org_id


def batch(prefix: str, rows: int) -> list[ConnectionInput]:
    return [ConnectionInput("meta", f"{prefix}_{n}", access_token=f"t{n}") for n in range(rows)]


def single_calls(conninfo: str, org_id: uuid.UUID, rounds: int) -> dict[str, float]:
    first, early, late = [], [], []
    for _ in range(rounds):
        with connect(conninfo, autocommit=True) as conn:
            repo = PlatformConnectionRepository(conn)
            times = [timed(lambda: repo.upsert(org_id, "meta", "act_hot")) for _ in range(100)]
        first.append(times[0])
        early.extend(times[1:5])
        late.extend(times[95:100])
    return {
        "call 1 (compiles)": statistics.median(first),
        "calls 2-5": statistics.median(early),
        "calls 96-100": statistics.median(late),
    }


def bulk_calls(conninfo: str, org_id: uuid.UUID, rows: int, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {
        "fresh, creates": [],
        "call 100, creates": [],
        "fresh, updates": [],
        "call 100, updates": [],
    }
    small = [ConnectionInput("google", f"g_{n}") for n in range(3)]
    for n in range(rounds):
        for state in ("fresh", "call 100"):
            elements = batch(f"{state}{n}", rows)
            for step in ("creates", "updates"):
                with connect(conninfo, autocommit=True) as conn:
                    repo = PlatformConnectionRepository(conn)
                    if state == "call 100":
                        for _ in range(99):
                            repo.upsert_many(org_id, small)
                    start = time.perf_counter()
                    repo.upsert_many(org_id, elements)
                    elapsed = time.perf_counter() - start
                times[f"{state}, {step}"].append(elapsed)
    return {label: statistics.median(values) for label, values in times.items()}


def analyze_calls(conninfo: str, rows: int, rounds: int) -> dict[str, float]:
    before, after = [], []
    with connect(conninfo, autocommit=True) as conn:
        conn.execute("ALTER TABLE cmis.platform_connections SET (autovacuum_enabled = false)")
        for n in range(rounds):
            org_id = new_org(conn)
            conn.execute("TRUNCATE cmis.platform_connections")  # no statistics survive it
            conn.execute(
                "SELECT pg_stat_reset_single_table_counters('cmis.platform_connections'::regclass)"
            )
            repo = PlatformConnectionRepository(conn)
            repo.upsert_many(org_id, batch(f"a{n}", rows))
            before.append(timed(lambda: repo.upsert_many(org_id, batch(f"a{n}", rows))))
            conn.execute("ANALYZE cmis.platform_connections")
            after.append(timed(lambda: repo.upsert_many(org_id, batch(f"a{n}", rows))))
        conn.execute("ALTER TABLE cmis.platform_connections RESET (autovacuum_enabled)")
    return {
        "second sync, not analyzed": statistics.median(before),
        "same sync, analyzed": statistics.median(after),
    }


def pooled_calls(conninfo: str, org_id: uuid.UUID, calls: int) -> dict[str, float]:
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    with connect(conninfo) as conn:
        info = conn.info
        host, port, user, dbname = info.host, info.port, info.user, info.dbname
    direct: list[float] = []
    pooled: list[float] = []
    with pgbouncer(host, port, user, pool_size=1, databases=(dbname,)) as bouncer:
        through = bouncer.conninfo(dbname, **{k: v for k, v in params.items() if k == "password"})
        for _ in range(3):
            for target, times in ((conninfo, direct), (through, pooled)):
                with connect(target, autocommit=True) as conn:
                    repo = PlatformConnectionRepository(conn)
                    repo.upsert(org_id, "meta", "act_pooled")
                    times.extend(
                        timed(lambda: repo.upsert(org_id, "meta", "act_pooled"))
                        for _ in range(calls)
                    )
    return {"direct": statistics.median(direct), "through pgbouncer": statistics.median(pooled)}


def prepared_calls(conninfo: str, org_id: uuid.UUID, calls: int) -> dict[str, float]:
    statement = query("upsert")
    params = {
        "org_id": org_id,
        "platform": "meta",
        "account_id": "act_prep",
        "account_name": None,
        "status": "active",
        "access_token": "t",
        "refresh_token": None,
        "token_expires_at": None,
        "scopes": None,
        "account_metadata": None,
        "auto_sync": None,
        "sync_frequency_minutes": None,
    }
    result: dict[str, list[float]] = {"prepared": [], "not prepared": []}
    with connect(conninfo, autocommit=True) as conn:
        for _ in range(3):
            for label, prepare in (("prepared", True), ("not prepared", False)):
                conn.execute(statement, params, prepare=prepare)
                for _ in range(calls):
                    start = time.perf_counter()
                    conn.execute(statement, params, prepare=prepare)
                    result[label].append(time.perf_counter() - start)
    return {label: statistics.median(times) for label, times in result.items()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with scratch_database("cmis_bench_deployment") as conninfo:
        with connect(conninfo, autocommit=True) as conn:
            org_id = new_org(conn)
            PlatformConnectionRepository(conn).upsert(org_id, "meta", "act_hot")
            conn.execute("ANALYZE cmis.platform_connections")
        report = {
            "single": single_calls(conninfo, org_id, args.rounds * 4),
            "bulk": bulk_calls(conninfo, org_id, args.rows, args.rounds),
            "pgbouncer": pooled_calls(conninfo, org_id, 400),
            "prepared": prepared_calls(conninfo, org_id, 400),
            "analyze": analyze_calls(conninfo, args.rows, args.rounds),
        }
    report["ratios"] = {
        "single: call 100 / calls 2-5": report["single"]["calls 96-100"]
        / report["single"]["calls 2-5"],
        "bulk creates: call 100 / fresh": report["bulk"]["call 100, creates"]
        / report["bulk"]["fresh, creates"],
        "bulk updates: call 100 / fresh": report["bulk"]["call 100, updates"]
        / report["bulk"]["fresh, updates"],
        "bulk: not analyzed / analyzed": report["analyze"]["second sync, not analyzed"]
        / report["analyze"]["same sync, analyzed"],
        "single: pgbouncer / direct": report["pgbouncer"]["through pgbouncer"]
        / report["pgbouncer"]["direct"],
        "single: not prepared / prepared": report["prepared"]["not prepared"]
        / report["prepared"]["prepared"],
    }
    report["rows"] = args.rows
    return report


def print_report(report: dict[str, Any]) -> None:
    for section in ("single", "bulk", "analyze", "pgbouncer", "prepared"):
        for label, seconds in report[section].items():
            print(f"{section:<10} {label:<28} {seconds * 1000:9.3f} ms")
    print()
    for label, ratio in report["ratios"].items():
        print(f"{label:<36} {ratio:6.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each bulk measurement")
    parser.add_argument("--rows", type=int, default=5000, help="elements of a bulk call")
    parser.add_argument("--quick", action="store_true", help="1 round of 1,000 elements")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.rows = 1, 1000
    report = measure(args)
    print_report(report)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
