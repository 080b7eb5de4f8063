"""Benchmark: the bulk call against the single call pipelined and a bare set-based INSERT.

Run: ``make bench`` runs it with the others; alone: ``.venv/bin/python -m bench.bulk``
(``--rows``, ``--rounds``, ``--quick``).

On a throw-away database seeded with bench/dataset.py (100k connections over
1,000 orgs, 30 % deleted), each round gives every method an organisation of its
own in the same starting state, then times one batch of ``--rows`` elements
in one transaction:

- ``bulk``: ``cmis.upsert_platform_connections`` (restore-or-create, every row);
- ``(a) pipelined singles``: ``cmis.upsert_platform_connection`` once per
  element, through psycopg's ``executemany`` (pipeline mode, one round trip);
- ``(b) bare set-based``: ``INSERT ... SELECT FROM jsonb_to_recordset ... ON
  CONFLICT DO UPDATE`` of the same rows: no restore, no checks, no locks.

The batch is a sync job's: 70 % keys with a live row, 20 % with a deleted row
only (the bulk call and the singles restore them; the bare statement inserts a
new row), 10 % new keys. Methods alternate within each round; the table is the
median of the rounds, the ratio is baseline time / bulk time (above 1: bulk is
faster). Then the largest batch that stays under one second, and the
backend's peak memory (VmHWM of its process, read from /proc: the server must
be on this machine).
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
from psycopg.types.json import Jsonb

from bench.dataset import scratch_database, seed
from cmis_repo.database import connect
from cmis_repo.queries import parse

SQL = parse(Path(__file__).with_name("bulk.sql").read_text("utf-8"))
RESULTS = Path(__file__).with_name("results") / "bulk.json"

Method = Callable[[psycopg.Connection[Any], uuid.UUID, list[dict[str, str]]], int]


def batch(rows: int) -> tuple[list[dict[str, str]], int, int]:
    """Elements 1..rows (70 % live, 20 % deleted, 10 % new) and the seed's live/deleted counts."""
    live, deleted = rows * 7 // 10, rows * 2 // 10
    elements = [
        {"platform": "meta", "account_id": f"acct_{n}", "access_token": f"token-{n}"}
        for n in range(1, rows + 1)
    ]
    return elements, live, deleted


def new_org(conn: psycopg.Connection[Any], live: int, deleted: int) -> uuid.UUID:
    org_id = uuid.uuid4()
    conn.execute(SQL["create_org"], {"org_id": org_id})
    conn.execute(SQL["seed_keys"], {"org_id": org_id, "live": live, "deleted": deleted})
    return org_id


def run_bulk(conn: psycopg.Connection[Any], org_id: uuid.UUID, rows: list[dict[str, str]]) -> int:
    with conn.transaction():
        return len(conn.execute(SQL["bulk"], {"org_id": org_id, "rows": Jsonb(rows)}).fetchall())


def run_singles(
    conn: psycopg.Connection[Any], org_id: uuid.UUID, rows: list[dict[str, str]]
) -> int:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(SQL["single"], [{"org_id": org_id, **r} for r in rows], returning=True)
        count = 0
        while True:
            count += len(cur.fetchall())
            if not cur.nextset():
                return count


def run_bare(conn: psycopg.Connection[Any], org_id: uuid.UUID, rows: list[dict[str, str]]) -> int:
    with conn.transaction():
        statement = SQL["bare_set_based"]
        return len(conn.execute(statement, {"org_id": org_id, "rows": Jsonb(rows)}).fetchall())


METHODS: dict[str, Method] = {
    "bulk": run_bulk,
    "(a) pipelined singles": run_singles,
    "(b) bare set-based": run_bare,
}


def timed(conn: psycopg.Connection[Any], method: Method, rows: int) -> float:
    elements, live, deleted = batch(rows)
    org_id = new_org(conn, live, deleted)
    start = time.perf_counter()
    returned = method(conn, org_id, elements)
    elapsed = time.perf_counter() - start
    assert returned == rows, (method, returned)
    return elapsed


def peak_memory_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def largest_batch_under_a_second(conninfo: str) -> list[dict[str, float]]:
    """Bulk time and the backend's peak memory for growing batches, until one takes 1 s."""
    found = []
    rows = 5_000
    while True:
        with connect(conninfo, autocommit=True) as conn:
            pid = conn.info.backend_pid
            before = peak_memory_kib(pid)
            seconds = min(timed(conn, run_bulk, rows) for _ in range(2))
            after = peak_memory_kib(pid)
        found.append(
            {
                "rows": rows,
                "seconds": seconds,
                "backend_peak_mib": after / 1024,
                "backend_growth_mib": (after - before) / 1024,
            }
        )
        print(f"  {rows:>7} rows: {seconds:6.3f} s, backend peak {after / 1024:7.1f} MiB")
        if seconds >= 1.0 or rows >= 320_000:
            return found
        rows = int(rows * 1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1,000 rows, 2 rounds")
    args = parser.parse_args()
    rows, rounds = (1_000, 2) if args.quick else (args.rows, args.rounds)

    with scratch_database("cmis_bench_bulk") as conninfo:
        with connect(conninfo, autocommit=True) as conn:
            counts = seed(conn, keys=10_000 if args.quick else 100_000)
            print(
                f"{counts.rows} background rows ({counts.deleted} deleted) over {counts.orgs} orgs"
            )
            times: dict[str, list[float]] = {name: [] for name in METHODS}
            for r in range(rounds):
                order = list(METHODS.items())
                order = order[r % len(order) :] + order[: r % len(order)]
                for name, method in order:
                    times[name].append(timed(conn, method, rows))
                conn.execute(SQL["analyze"])
        bulk = statistics.median(times["bulk"])
        print(f"\n{rows} elements (70 % live, 20 % deleted, 10 % new), {rounds} rounds, medians")
        print(f"{'method':<24} {'ms':>9} {'rows/s':>10} {'bulk speed-up':>14} {'target':>7}")
        entries = []
        for name, samples in times.items():
            ms = statistics.median(samples) * 1000
            ratio = statistics.median(samples) / bulk
            target = {"(a) pipelined singles": 4.0, "(b) bare set-based": 0.8}.get(name)
            print(
                f"{name:<24} {ms:>9.1f} {rows / (ms / 1000):>10.0f} {ratio:>14.2f} "
                f"{'' if target is None else f'>= {target}':>7}"
            )
            if target is not None:
                entries.append(
                    {
                        "scenario": f"bulk vs {name}",
                        "rows": rows,
                        "ours": bulk * 1000,
                        "baseline": ms,
                        "ratio": ratio,
                        "target": target,
                        "unit": "ms",
                    }
                )
        print("\nlargest batch under 1 s (bulk, same mix):")
        sizes = largest_batch_under_a_second(conninfo)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"ratios": entries, "batch_sizes": sizes}, indent=2))
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
