"""Benchmark: cmis.upsert_platform_connection against the bare INSERT ... ON CONFLICT.

Run: ``.venv/bin/python -m bench.function_floor`` (about 5 minutes; ``--quick``
for a smoke run; final runs under ``flock /tmp/cmis_bench.lock``).

In a scratch database seeded with ``bench.dataset.seed`` (100k keys, 30 %
soft-deleted), pgbench (``-M prepared -n``, ``-j`` at most 2) runs, for each
path, our function ("ours") and the cheapest single statement that does the
same to a live key ("bare": ``INSERT ... ON CONFLICT (org_id, platform,
account_id) WHERE deleted_at IS NULL DO UPDATE ... RETURNING *``, which cannot
restore); the scripts are in ``bench/pgbench/``:

- update: a live key of the seeded data;
- restore: one pipelined transaction soft-deletes a live key's row with the
  same plain UPDATE on both sides, then calls ours (which undeletes that row)
  or the bare statement (which inserts a new row);
- create: a key never used before;
- mix: 70 % update, 20 % restore, 10 % create (pgbench script weights);

plus ``SELECT 1``, the round-trip floor. Ours and bare alternate in every round
(the order flips each round); each figure is the median over the rounds, the
ratio the median of the per-round ratios ours / bare. Targets on the mix:
ours >= 0.90 x bare at 1 client, >= 0.85 x at 8. ``--variant FILE`` also
installs the function that FILE creates (under another name, scratch database
only) and measures it in the same rounds. A run during which the server's
other databases ran more than ``--max-foreign`` transactions per second (other
people's work) is done again once they are quiet; each cell records the rate
its runs saw. Results also go to
``bench/results/function_floor.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.dataset import scratch_database, seed
from cmis_repo.queries import parse

HERE = Path(__file__).parent
SCRIPTS = HERE / "pgbench"
RESULTS = HERE / "results"
SQL = parse((HERE / "function_floor.sql").read_text("utf-8"))
OUR_FUNCTION = "cmis.upsert_platform_connection"
PATHS = ("update", "restore", "create")
MIX = {"update": 70, "restore": 20, "create": 10}
SCENARIOS = (*PATHS, "mix")
#: Times a measurement disturbed by other work is done again.
MAX_RETRIES = 5
#: ours / bare on the mix, by number of clients.
TARGETS = {1: 0.90, 8: 0.85}
#: (rows, deleted rows) one transaction adds, by script kind and path.
EXPECTED = {
    ("ours", "update"): (0, 0),
    ("ours", "restore"): (0, 0),
    ("ours", "create"): (1, 0),
    ("bare", "update"): (0, 0),
    ("bare", "restore"): (1, 1),
    ("bare", "create"): (1, 0),
}
_FUNCTION_NAME = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+([\w.]+)\s*\(", re.I)


@dataclass(frozen=True)
class Side:
    name: str  # ours, bare or variant
    kind: str  # the scripts it runs: ours or bare
    scripts: dict[str, Path]  # path -> pgbench script

    def weighted(self, scenario: str) -> list[tuple[Path, int]]:
        if scenario == "mix":
            return [(self.scripts[path], weight) for path, weight in MIX.items()]
        return [(self.scripts[scenario], 1)]


def find_pgbench() -> str:
    found = os.environ.get("PGBENCH") or shutil.which("pgbench")
    if found:
        return found
    pg_config = shutil.which("pg_config")
    if pg_config:
        # pg_config from PATH, no shell.
        bindir = subprocess.run(  # noqa: S603
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(bindir) / "pgbench").exists():
            return str(Path(bindir) / "pgbench")
    return "/usr/lib/postgresql/15/bin/pgbench"


class ForeignWork:
    """Other work on the server: transactions per second committed or rolled back
    in its other databases (pg_stat_database). Above ``max_rate``, or below 0 (a
    database was dropped), a measurement is disturbed: do it again when quiet."""

    def __init__(self, conninfo: str, max_rate: float, ours: list[str]) -> None:
        self.max_rate, self.ours = max_rate, ours  # ours: the benchmark's databases
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.start, self.count = time.monotonic(), self.xacts()

    def xacts(self) -> int:
        row = self.conn.execute(SQL["foreign_xacts"], {"ours": self.ours}).fetchone()
        return int(row[0]) if row else 0

    def restart(self) -> None:
        self.start, self.count = time.monotonic(), self.xacts()

    def rate(self) -> float:
        """Since the last restart()."""
        return (self.xacts() - self.count) / (time.monotonic() - self.start)

    def too_much(self, rate: float) -> bool:
        return not 0 <= rate <= self.max_rate

    def wait_for_quiet(self, window: float = 2.0, limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.restart()
            time.sleep(window)
            if not self.too_much(self.rate()):
                return

    def close(self) -> None:
        self.conn.close()


class Pgbench:
    def __init__(
        self, binary: str, conninfo: str, keys: int, orgs: int, foreign: ForeignWork
    ) -> None:
        self.binary, self.conninfo = binary, conninfo
        self.defines = {"keys": keys, "orgs": orgs}
        self.runs = itertools.count(1)
        self.foreign = foreign
        self.foreign_rate = 0.0  # during the last run
        self.failed = 0  # transactions of the last run that failed (deadlocks)
        self.retries = 0

    def run(
        self,
        scripts: list[tuple[Path, int]],
        *,
        clients: int,
        seconds: int | None = None,
        transactions: int | None = None,
    ) -> float:
        """Run pgbench (again while other work disturbs it); its tps."""
        tps = self.run_once(scripts, clients=clients, seconds=seconds, transactions=transactions)
        for _ in range(MAX_RETRIES):
            if transactions is not None or not self.foreign.too_much(self.foreign_rate):
                break
            self.retries += 1
            print(f"  {self.foreign_rate:.0f} tx/s in other databases: again", file=sys.stderr)
            self.foreign.wait_for_quiet()
            tps = self.run_once(scripts, clients=clients, seconds=seconds)
        return tps

    def run_once(
        self,
        scripts: list[tuple[Path, int]],
        *,
        clients: int,
        seconds: int | None = None,
        transactions: int | None = None,
    ) -> float:
        """Run pgbench; its tps. Each run's fresh keys start at a new base."""
        defines = {**self.defines, "i": 0, "base": next(self.runs) * 10**9}
        cmd = [self.binary, "-n", "-M", "prepared", "-c", str(clients)]
        cmd += ["-j", str(min(clients, 2))]
        cmd += ["-T", str(seconds)] if transactions is None else ["-t", str(transactions)]
        for name, value in defines.items():
            cmd += ["-D", f"{name}={value}"]
        for script, weight in scripts:
            cmd += ["-f", f"{script}@{weight}"]
        cmd.append(self.conninfo)
        self.foreign.restart()
        # Our own arguments, no shell.
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        self.foreign_rate = self.foreign.rate()
        failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
        tps = re.search(r"^tps = ([\d.]+)", done.stdout, re.M)
        if done.returncode != 0 or tps is None:
            raise RuntimeError(f"pgbench failed: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
        # Failed, not aborted: deadlocks (40P01). ours_restore.sql's plain soft
        # delete holds the row when the call asks for the key lock, which a
        # concurrent call of the key holds while it waits for that row; the
        # server ends one after deadlock_timeout (1 s). Counted, not retried.
        self.failed = int(failed.group(1)) if failed else 0
        if transactions is not None and self.failed:
            raise RuntimeError(f"self-check: {self.failed} failed\n{done.stdout}{done.stderr}")
        return float(tps.group(1))


def function_name(text: str) -> str:
    """The function a variant's SQL creates; not ours (the variant goes beside it)."""
    match = _FUNCTION_NAME.search(text)
    if match is None or match.group(1) == OUR_FUNCTION:
        raise SystemExit(f"no CREATE FUNCTION under a name other than {OUR_FUNCTION}")
    return match.group(1)


def variant_side(conninfo: str, file: Path, workdir: Path, like: str) -> Side:
    """Install the function ``file`` creates; ours' scripts calling it instead."""
    # A file of this repository named on the command line, run as it is.
    text = file.read_text("utf-8")
    name = function_name(text)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(text)
    scripts = {}
    for path in PATHS:
        script = workdir / f"variant_{path}.sql"
        source = (SCRIPTS / f"ours_{path}.sql").read_text("utf-8")
        script.write_text(source.replace(f"{OUR_FUNCTION}(", f"{name}("), "utf-8")
        scripts[path] = script
    return Side("variant", like, scripts)


def self_check(pgbench: Pgbench, conninfo: str, sides: list[Side]) -> None:
    """Each script takes the path it is meant to (rows and deleted rows added)."""
    n = 20
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for side, path in itertools.product(sides, PATHS):
            before = conn.execute(SQL["counts"]).fetchone()
            pgbench.run([(side.scripts[path], 1)], clients=1, transactions=n)
            after = conn.execute(SQL["counts"]).fetchone()
            assert before is not None
            assert after is not None
            got = (after[0] - before[0], after[1] - before[1])
            want = tuple(n * d for d in EXPECTED[side.kind, path])
            if got != want:
                raise RuntimeError(f"{side.name} {path}: (rows, deleted) +{got}, expected +{want}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    binary = args.pgbench or find_pgbench()
    load_before = os.getloadavg()
    started = time.monotonic()
    with (
        scratch_database(args.database) as conninfo,
        tempfile.TemporaryDirectory() as tmp,
    ):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            counts = seed(conn, keys=args.keys, orgs=args.orgs)
            server = dict(
                zip(
                    (
                        "version",
                        "synchronous_commit",
                        "shared_buffers",
                        "wal_sync_method",
                        "max_wal_size",
                    ),
                    conn.execute(SQL["server"]).fetchone() or (),
                    strict=True,
                )
            )
        sides = [
            Side("ours", "ours", {p: SCRIPTS / f"ours_{p}.sql" for p in PATHS}),
            Side("bare", "bare", {p: SCRIPTS / f"bare_{p}.sql" for p in PATHS}),
        ]
        if args.variant:
            sides.append(variant_side(conninfo, args.variant, Path(tmp), args.variant_like))
        with psycopg.connect(conninfo, autocommit=True) as conn:
            functions: dict[str, str] = dict(conn.execute(SQL["definitions"]).fetchall())
        foreign_work = ForeignWork(conninfo, args.max_foreign, [args.database])
        pgbench = Pgbench(binary, conninfo, args.keys, args.orgs, foreign_work)
        self_check(pgbench, conninfo, sides)
        for side in sides:  # warm caches and plans; untimed
            pgbench.run(side.weighted("mix"), clients=2, seconds=args.warmup)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SQL["checkpoint"])

        tps: dict[tuple[str, int, str], list[float]] = {}
        foreign: dict[tuple[str, int], list[float]] = {}
        failed: dict[tuple[str, int, str], int] = {}
        select1: dict[int, list[float]] = {c: [] for c in args.clients}
        total = args.rounds * len(args.clients) * (len(SCENARIOS) * len(sides) + 1)
        done = 0
        for r in range(args.rounds):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for clients in args.clients:
                select1[clients].append(
                    pgbench.run(
                        [(SCRIPTS / "select1.sql", 1)], clients=clients, seconds=args.seconds
                    )
                )
                done += 1
                for scenario in SCENARIOS:
                    for side in order:
                        value = pgbench.run(
                            side.weighted(scenario), clients=clients, seconds=args.seconds
                        )
                        tps.setdefault((scenario, clients, side.name), []).append(value)
                        foreign.setdefault((scenario, clients), []).append(pgbench.foreign_rate)
                        cell = (scenario, clients, side.name)
                        failed[cell] = failed.get(cell, 0) + pgbench.failed
                        done += 1
                        print(
                            f"[{done:3}/{total}] round {r + 1} {scenario:<7} {clients} "
                            f"client(s) {side.name:<7} {value:9.1f} tps "
                            f"(other databases: {pgbench.foreign_rate:.0f} tx/s)",
                            file=sys.stderr,
                        )
        retries = pgbench.retries
        foreign_work.close()

    rates = [rate for values in foreign.values() for rate in values]
    results = []
    for scenario, clients in itertools.product(SCENARIOS, args.clients):
        ours, bare = tps[scenario, clients, "ours"], tps[scenario, clients, "bare"]
        ratios = [o / b for o, b in zip(ours, bare, strict=True)]
        target = TARGETS.get(clients) if scenario == "mix" else None
        ratio = statistics.median(ratios)
        entry: dict[str, Any] = {
            "scenario": scenario,
            "clients": clients,
            "ours": statistics.median(ours),
            "baseline": statistics.median(bare),
            "ratio": ratio,
            "select1": statistics.median(select1[clients]),
            "target": target,
            "met": None if target is None else ratio >= target,
            "rounds": {"ours": ours, "baseline": bare, "ratio": ratios},
            # Transactions per second in the other databases during each run of
            # the cell: how much other work ran on the server meanwhile.
            "foreign_xacts_per_s": foreign[scenario, clients],
            # Deadlocked transactions, all rounds (see Pgbench.run_once).
            "failed": {s.name: failed[scenario, clients, s.name] for s in sides},
        }
        if args.variant:
            variant = tps[scenario, clients, "variant"]
            variant_ratios = [v / b for v, b in zip(variant, bare, strict=True)]
            entry["variant"] = statistics.median(variant)
            entry["variant_ratio"] = statistics.median(variant_ratios)
            entry["rounds"] |= {"variant": variant, "variant_ratio": variant_ratios}
        results.append(entry)
    return {
        "benchmark": "function_floor",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "clients": args.clients,
            "keys": args.keys,
            "orgs": args.orgs,
            "mix": MIX,
            "pgbench": "-M prepared -n, -j min(clients, 2)",
            "variant": str(args.variant) if args.variant else None,
            "variant_like": args.variant_like if args.variant else None,
        },
        "dataset": {"rows": counts.rows, "deleted": counts.deleted, "orgs": counts.orgs},
        "server": server,
        "functions_md5": functions,
        "load": {"before": load_before, "after": os.getloadavg()},
        "foreign_xacts_per_s": {
            "median": statistics.median(rates),
            "max": max(rates),
            "max_allowed": args.max_foreign,
            "runs_done_again": retries,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "results": results,
    }


def print_table(report: dict[str, Any]) -> None:
    variant = report["settings"]["variant"] is not None
    head = f"{'scenario':<8} {'clients':>7} {'ours tps':>9} {'bare tps':>9} {'ours/bare':>9}"
    head += f" {'variant':>9} {'var/bare':>8}" if variant else ""
    head += f" {'SELECT 1':>9}  target"
    print(head)
    for e in report["results"]:
        line = (
            f"{e['scenario']:<8} {e['clients']:>7} {e['ours']:>9.0f} {e['baseline']:>9.0f}"
            f" {e['ratio']:>9.3f}"
        )
        line += f" {e['variant']:>9.0f} {e['variant_ratio']:>8.3f}" if variant else ""
        line += f" {e['select1']:>9.0f}"
        if e["target"] is not None:
            line += f"  >= {e['target']:.2f}: {'met' if e['met'] else 'MISSED'}"
        print(line)
    failed: dict[str, int] = {}
    for e in report["results"]:
        for side, count in e["failed"].items():
            failed[side] = failed.get(side, 0) + count
    if any(failed.values()):
        counts = ", ".join(f"{side} {count}" for side, count in failed.items())
        print(f"deadlocked (failed) transactions: {counts}")
    s = report["settings"]
    print(
        f"{s['rounds']} rounds x {s['seconds']} s per run, medians; ratio = median of the "
        f"per-round ratios; {report['dataset']['rows']} rows seeded; load before/after "
        f"{report['load']['before'][0]:.2f}/{report['load']['after'][0]:.2f}; other "
        f"databases during the runs: median {report['foreign_xacts_per_s']['median']:.0f} tx/s, "
        f"max {report['foreign_xacts_per_s']['max']:.0f} "
        f"({report['foreign_xacts_per_s']['runs_done_again']} runs done again); "
        f"{report['elapsed_s']} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, help="per pgbench run (3; --quick 1)")
    parser.add_argument("--rounds", type=int, help="rounds (5; --quick 1)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="(1 8)")
    parser.add_argument("--keys", type=int, help="seeded keys (100000; --quick 20000)")
    parser.add_argument("--orgs", type=int, default=1_000, help="seeded orgs (1000)")
    parser.add_argument("--warmup", type=int, help="untimed seconds per side (3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s runs")
    parser.add_argument("--variant", type=Path, help="SQL file creating a variant to measure")
    parser.add_argument(
        "--variant-like",
        choices=("ours", "bare"),
        default="ours",
        help="whose rows the variant's self-check expects (ours: it restores)",
    )
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=10.0,
        help="tx/s in other databases above which a run is done again (10)",
    )
    parser.add_argument("--database", default="cmis_bench_floor", help="scratch database")
    parser.add_argument("--pgbench", help="pgbench binary (PGBENCH, PATH, pg_config)")
    parser.add_argument("--output", type=Path, default=RESULTS / "function_floor.json")
    args = parser.parse_args(argv)
    defaults = (
        {"seconds": 1, "rounds": 1, "keys": 20_000, "warmup": 1}
        if args.quick
        else {"seconds": 3, "rounds": 5, "keys": 100_000, "warmup": 3}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if max(args.clients) > 64:
        parser.error("at most 64 clients (the create scripts' key numbering)")
    sides = 3 if args.variant else 2
    runs = args.rounds * len(args.clients) * (len(SCENARIOS) * sides + 1)
    print(
        f"{runs} pgbench runs of {args.seconds} s: about "
        f"{runs * (args.seconds + 0.3) / 60:.1f} min",
        file=sys.stderr,
    )
    report = measure(args)
    print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
