"""Benchmark: latency of one cmis.upsert_platform_connection call as the table grows.

Run: ``.venv/bin/python -m bench.growth`` (about 2 minutes; ``--quick`` for a
smoke run; final runs under ``flock /tmp/cmis_bench.lock``).

Three scratch databases are seeded with ``bench.dataset.seed`` at 10k, 100k
and 1M keys (30 % soft-deleted, some keys with history). One autocommit
connection per database times single calls with ``time.perf_counter_ns``
around ``execute`` of a prepared statement: 70 % update (a live key), 20 %
restore (a live key soft-deleted just before, untimed), 10 % create (a new
key), the same sequence of paths on every table. The tables take turns in
rounds (the order rotates each round), each round's block starting with a few
untimed calls; the bare ``INSERT ... ON CONFLICT`` statement is timed the same
way in every block (on keys of its own; ours and bare take turns going first),
to tell the table's growth from the function's. A block during which other
databases of the server ran more than ``--max-foreign`` transactions per second
(other people's work) is timed again once they are quiet.
Target: p50 at 1M <= 1.25 x p50 at 10k. Results also go to
``bench/results/growth.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.dataset import key, scratch_database, seed
from bench.function_floor import MAX_RETRIES, ForeignWork
from cmis_repo.queries import parse

HERE = Path(__file__).parent
SQL = parse((HERE / "growth.sql").read_text("utf-8"))
RESULTS = HERE / "results"
MIX = {"update": 70, "restore": 20, "create": 10}
TARGET = 1.25  # p50 at the largest table / p50 at the smallest
TOKEN = "b" * 200


def percentile(values: list[int], q: float) -> float:
    """The q-quantile (0..1) of ``values``, linear between closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Table:
    keys: int
    orgs: int
    conn: psycopg.Connection[Any]
    rows: int = 0
    seed_s: float = 0.0
    fresh: int = 0
    retries: int = 0
    # side -> path -> latencies in ns; side -> per-round p50 in ns
    samples: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    round_p50: dict[str, list[float]] = field(default_factory=dict)

    def params(self, n: int) -> dict[str, Any]:
        k = key(n, self.orgs)
        return {
            "org_id": k.org_id,
            "platform": k.platform,
            "account_id": k.account_id,
            "account_name": f"Account {n}",
            "access_token": TOKEN,
        }

    def call(self, side: str, path: str, rng: random.Random) -> int:
        """One timed call on ``path``; its latency in ns."""
        if path == "create":
            self.fresh += 1
            n = 10**9 + self.fresh  # never seeded: n <= keys
        else:
            n = rng.randrange(self.keys // 10) * 10 + rng.randrange(3, 10)  # live
        params = self.params(n)
        if path == "restore":
            self.conn.execute(SQL["soft_delete"], params, prepare=True)
        statement = SQL["upsert"] if side == "ours" else SQL["bare"]
        start = time.perf_counter_ns()
        self.conn.execute(statement, params, prepare=True).fetchall()
        return time.perf_counter_ns() - start

    def block(
        self,
        side: str,
        paths: list[str],
        warmup: int,
        rng_seed: int,
        foreign: ForeignWork | None = None,
    ) -> None:
        """Time ``paths``, again (on other keys) while other work disturbs them."""
        for attempt in range(MAX_RETRIES + 1):
            rng = random.Random(rng_seed + 1000 * attempt)
            for path in paths[:warmup]:
                self.call(side, path, rng)
            if foreign:
                foreign.restart()
            got = [(path, self.call(side, path, rng)) for path in paths]
            rate = foreign.rate() if foreign else 0.0
            if foreign is None or not foreign.too_much(rate) or attempt == MAX_RETRIES:
                break
            self.retries += 1
            print(f"  {rate:.0f} tx/s in other databases: again", file=sys.stderr)
            foreign.wait_for_quiet()
        by_path = self.samples.setdefault(side, {p: [] for p in MIX})
        for path, latency in got:
            by_path[path].append(latency)
        self.round_p50.setdefault(side, []).append(statistics.median(x for _, x in got))


def summary(table: Table, side: str, smallest: Table) -> dict[str, Any]:
    by_path = table.samples[side]
    every = [x for values in by_path.values() for x in values]
    base = [x for values in smallest.samples[side].values() for x in values]
    rounds = [a / b for a, b in zip(table.round_p50[side], smallest.round_p50[side], strict=True)]
    return {
        "calls": len(every),
        "p50_us": percentile(every, 0.50) / 1000,
        "p99_us": percentile(every, 0.99) / 1000,
        "mean_us": statistics.fmean(every) / 1000,
        "p50_ratio": percentile(every, 0.50) / percentile(base, 0.50),
        "p99_ratio": percentile(every, 0.99) / percentile(base, 0.99),
        "round_p50_ratios": rounds,
        "paths": {
            path: {
                "calls": len(values),
                "p50_us": percentile(values, 0.50) / 1000,
                "p99_us": percentile(values, 0.99) / 1000,
            }
            for path, values in by_path.items()
        },
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    started = time.monotonic()
    sides = ["ours"] if args.no_bare else ["ours", "bare"]
    with ExitStack() as stack:
        tables: list[Table] = []
        for keys in args.sizes:
            conninfo = stack.enter_context(scratch_database(f"cmis_bench_growth_{keys}"))
            conn = stack.enter_context(psycopg.connect(conninfo, autocommit=True))
            t0 = time.monotonic()
            counts = seed(conn, keys=keys, orgs=args.orgs)
            table = Table(keys, args.orgs, conn, rows=counts.rows)
            table.seed_s = round(time.monotonic() - t0, 1)
            print(f"seeded {counts.rows} rows in {table.seed_s} s", file=sys.stderr)
            tables.append(table)
        names = [f"cmis_bench_growth_{keys}" for keys in args.sizes]
        foreign = ForeignWork(conninfo, args.max_foreign, names)
        stack.callback(foreign.close)
        # The same sequence of paths on every table, in every round.
        paths = random.Random(1).choices(list(MIX), weights=list(MIX.values()), k=args.calls)
        for table in tables:  # untimed: plans, caches
            for side in sides:
                table.block(side, paths[: args.warmup], 0, 0)
            for samples in table.samples.values():
                for values in samples.values():
                    values.clear()
            table.round_p50.clear()
        for r in range(args.rounds):
            order = tables[r % len(tables) :] + tables[: r % len(tables)]
            for table in order:
                # Each side its own keys (the first must not warm the pages of
                # the second's), and the sides take turns going first.
                for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                    seed_ = r * len(sides) + sides.index(side)
                    table.block(side, paths, args.block_warmup, seed_, foreign)
                p50 = table.round_p50["ours"][-1] / 1000
                print(
                    f"round {r + 1} {table.keys:>9} keys: ours p50 {p50:7.1f} us",
                    file=sys.stderr,
                )
        sizes = {t.keys: t.conn.execute(SQL["table_size"]).fetchone() for t in tables}
        results = []
        for table in tables:
            entry: dict[str, Any] = {
                "keys": table.keys,
                "rows": table.rows,
                "table_bytes": (sizes[table.keys] or (0,))[0],
                "seed_s": table.seed_s,
            }
            for side in sides:
                entry[side] = summary(table, side, tables[0])
            results.append(entry)
    largest = results[-1]["ours"]
    return {
        "benchmark": "growth",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "sizes": args.sizes,
            "orgs": args.orgs,
            "calls_per_round": args.calls,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "block_warmup": args.block_warmup,
            "mix": MIX,
            "timing": "perf_counter_ns around execute(prepare=True) + fetchall, autocommit",
        },
        "target": {
            "p50_ratio_max": TARGET,
            "p50_ratio": largest["p50_ratio"],
            "met": largest["p50_ratio"] <= TARGET,
        },
        "load": {"before": load_before, "after": os.getloadavg()},
        "blocks_done_again": sum(t.retries for t in tables),
        "elapsed_s": round(time.monotonic() - started, 1),
        "results": results,
    }


def print_table(report: dict[str, Any]) -> None:
    sides = [s for s in ("ours", "bare") if s in report["results"][0]]
    head = f"{'keys':>9} {'rows':>9}"
    for side in sides:
        head += f" {side + ' p50':>9} {'p99':>8} {'ratio':>8}"
    print(head + "   (µs; ratio: p50 / p50 of the smallest table)")
    for e in report["results"]:
        line = f"{e['keys']:>9} {e['rows']:>9}"
        for side in sides:
            s = e[side]
            line += f" {s['p50_us']:>9.1f} {s['p99_us']:>8.1f} {s['p50_ratio']:>8.3f}"
        print(line)
    for e in report["results"]:
        paths = ", ".join(f"{p} {v['p50_us']:.0f}" for p, v in e["ours"]["paths"].items())
        print(f"  ours p50 by path at {e['keys']} keys (µs): {paths}")
    t = report["target"]
    s = report["settings"]
    print(
        f"target p50 ratio <= {t['p50_ratio_max']}: {t['p50_ratio']:.3f} "
        f"{'met' if t['met'] else 'MISSED'}; {s['rounds']} rounds x {s['calls_per_round']} "
        f"calls per table and side; load before/after {report['load']['before'][0]:.2f}/"
        f"{report['load']['after'][0]:.2f}; {report['elapsed_s']} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="keys per table (10k 100k 1M)")
    parser.add_argument("--orgs", type=int, default=1_000, help="seeded orgs (1000)")
    parser.add_argument("--calls", type=int, help="timed calls per table, side, round (2000)")
    parser.add_argument("--rounds", type=int, help="rounds (5)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls at the start")
    parser.add_argument("--block-warmup", type=int, default=50, help="untimed calls per block")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=10.0,
        help="tx/s in other databases above which a block is timed again (10)",
    )
    parser.add_argument("--no-bare", action="store_true", help="leave the bare statement out")
    parser.add_argument("--quick", action="store_true", help="smoke run: small tables, few calls")
    parser.add_argument("--output", type=Path, default=RESULTS / "growth.json")
    args = parser.parse_args(argv)
    defaults: dict[str, Any] = (
        {"sizes": [1_000, 10_000, 100_000], "calls": 200, "rounds": 2}
        if args.quick
        else {"sizes": [10_000, 100_000, 1_000_000], "calls": 2000, "rounds": 5}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sizes = sorted(args.sizes)
    report = measure(args)
    print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
