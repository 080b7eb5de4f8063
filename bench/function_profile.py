"""Profile: where a cmis.upsert_platform_connection call spends its time, per path.

Run: ``.venv/bin/python -m bench.function_profile`` (under a minute; needs
plprofiler: ``apt-get install postgresql-15-plprofiler``). ``--variant FILE``
profiles, in the same run, the function FILE creates under another name (as
``bench.function_floor --variant`` measures it).

In a scratch database seeded with ``bench.dataset.seed`` (100k keys), one
autocommit connection makes, per path, ``--calls`` calls after a warm-up:
update (a live key), restore (a live key soft-deleted just before, untimed),
create (a new key). Two passes per path:

1. without the profiler: the call's time seen from Python, the bare
   ``INSERT ... ON CONFLICT`` and ``SELECT 1`` the same way, and
   ``track_functions = 'all'`` totals of the function and of the functions it
   calls (org check, key lock);
2. with plprofiler (its C functions declared in the scratch database only, and
   ``LOAD``-ed in the session: no server restart, no extension): microseconds
   per line of the function's source, nested statements' time taken out of the
   statements around them, then summed into sections by what each line does.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.dataset import key, scratch_database, seed
from bench.function_floor import OUR_FUNCTION, RESULTS, function_name
from cmis_repo.queries import parse

HERE = Path(__file__).parent
SQL = parse((HERE / "function_profile.sql").read_text("utf-8"))
GROWTH_SQL = parse((HERE / "growth.sql").read_text("utf-8"))
PATHS = ("update", "restore", "create")
TOKEN = "b" * 200

#: Section of a statement, by the first rule its text matches (see section()).
SECTIONS = (
    "validation (argument IFs)",
    "org check",
    "key lock",
    "fast path UPDATE",
    "find deleted row (SELECT)",
    "undelete: subtransaction",
    "undelete: UPDATE",
    "org exists check",
    "INSERT ... ON CONFLICT",
    "RETURN QUERY",
    "control flow, assignments, entry",
)


@dataclass(frozen=True)
class Line:
    number: int
    indent: int
    text: str  # the statement's text: its first line and the deeper ones after it


_ENDS_STATEMENT = re.compile(r"(;|\bTHEN|\bLOOP|\bBEGIN|\bELSE|\bDECLARE)$")


def statements(source: str) -> list[Line]:
    """Every statement line of the source (not blank, not a comment), with its text:
    the line and those after it up to the end of the statement (``;``, ``THEN``, ...)."""
    raw = source.split("\n")
    out = []
    for i, line in enumerate(raw):
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        text = [stripped]
        for following in raw[i + 1 :]:
            if _ENDS_STATEMENT.search(text[-1].split("--")[0].rstrip()):
                break
            if following.strip() and not following.strip().startswith("--"):
                text.append(following.strip())
        out.append(Line(i + 1, len(line) - len(line.lstrip()), " ".join(text)))
    return out


def self_times(source: str, totals: dict[int, float]) -> dict[int, float]:
    """Per executed line: its time less that of the executed lines nested in it."""
    own = dict(totals)
    own.setdefault(0, 0.0)
    stack: list[Line] = []
    for line in statements(source):
        keeps_parent = re.match(r"(ELSE|ELSIF|EXCEPTION|WHEN)\b", line.text)
        while stack and (
            stack[-1].indent > line.indent or (stack[-1].indent == line.indent and not keeps_parent)
        ):
            stack.pop()
        if line.number in totals:
            # Line 0 is the whole call: the lines outside every block are in it.
            own[stack[-1].number if stack else 0] -= totals[line.number]
            stack.append(line)
    return own


def section(line: Line, first_line: int, outer_block: int, guard_end: int) -> str:
    """What a statement is for, from its text (robust to the function being edited)."""
    t = line.text
    if re.search(r"assert_platform_connection_org_scope|app\.current_org_id|v_setting", t):
        return "org check"
    if re.search(r"lock_platform_connection_key|advisory", t):
        return "key lock"
    if line.number < guard_end and t.startswith("IF "):
        return "validation (argument IFs)"
    if t.startswith("UPDATE "):
        return "undelete: UPDATE" if re.search(r"deleted_at = NULL", t) else "fast path UPDATE"
    if t.startswith("SELECT ") and "deleted_at IS NOT NULL" in t:
        return "find deleted row (SELECT)"
    if t == "BEGIN" and line.number not in (first_line, outer_block):
        return "undelete: subtransaction"
    if t.startswith("INSERT ") or "gen_random_uuid" in t:
        return "INSERT ... ON CONFLICT"
    if "cmis.orgs" in t:
        return "org exists check"
    if t.startswith("RETURN QUERY"):
        return "RETURN QUERY"
    return "control flow, assignments, entry"


def sections(source: str, totals: dict[int, float]) -> tuple[dict[str, float], list[Any]]:
    """Microseconds per section, and the lines with their own time."""
    lines = {line.number: line for line in statements(source)}
    own = self_times(source, totals)
    outer = min((n for n, line in lines.items() if line.text == "BEGIN"), default=0)
    # The argument checks end where the org check or the lock starts.
    guard_end = min(
        (
            n
            for n, line in lines.items()
            if re.search(r"org_scope|app\.current_org_id|advisory|lock_platform", line.text)
        ),
        default=0,
    )
    per_section = dict.fromkeys(SECTIONS, 0.0)
    detail = []
    for number, value in sorted(own.items()):
        if number == 0:  # the whole call: what no line accounts for
            per_section["control flow, assignments, entry"] += value
            continue
        line = lines.get(number, Line(number, 0, "?"))
        name = section(line, 0, outer, guard_end)
        per_section[name] += value
        detail.append({"line": number, "us": value, "section": name, "text": line.text[:80]})
    return per_section, detail


class Profiler:
    def __init__(
        self, conn: psycopg.Connection[Any], keys: int, orgs: int, like: Profiler | None = None
    ) -> None:
        self.conn, self.keys, self.orgs = conn, keys, orgs
        # Another connection's profiler goes on with the same fresh keys and random keys.
        self.state: dict[str, int] = like.state if like else {"fresh": 0}
        self.rng: random.Random = like.rng if like else random.Random(1)

    def params(self, path: str) -> dict[str, Any]:
        if path == "create":
            self.state["fresh"] += 1
            n = 10**9 + self.state["fresh"]
        else:
            n = self.rng.randrange(self.keys // 10) * 10 + self.rng.randrange(3, 10)
        k = key(n, self.orgs)
        params = {
            "org_id": k.org_id,
            "platform": k.platform,
            "account_id": k.account_id,
            "account_name": f"Account {n}",
            "access_token": TOKEN,
        }
        if path == "restore":
            self.conn.execute(GROWTH_SQL["soft_delete"], params, prepare=True)
        return params

    def time_calls(self, statement: Any, path: str, calls: int) -> float:
        """Mean microseconds per call of ``statement`` on ``path``, seen from here."""
        spent = 0
        for _ in range(calls):
            params = self.params(path)
            start = time.perf_counter_ns()
            self.conn.execute(statement, params, prepare=True).fetchall()
            spent += time.perf_counter_ns() - start
        return spent / calls / 1000

    def function_stats(self) -> dict[str, tuple[int, float, float]]:
        self.conn.execute(SQL["flush_stats"])
        self.conn.execute(SQL["select1"])
        rows = self.conn.execute(SQL["function_stats"]).fetchall()
        return {name: (calls, total, own) for name, calls, total, own in rows}


def profile(
    prof: Profiler, conninfo: str, function: str, path: str, calls: int, warmup: int
) -> dict[str, Any]:
    conn = prof.conn
    name = sql.Identifier(*function.split("."))
    call = sql.SQL(SQL["call"]).format(function=name)

    # Pass 1: no profiler.
    prof.time_calls(call, path, warmup)
    before = prof.function_stats()
    client_us = prof.time_calls(call, path, calls)
    after = prof.function_stats()
    tracked = {
        fn: {
            "calls_per_call": (c - before.get(fn, (0, 0.0, 0.0))[0]) / calls,
            "total_us": (t - before.get(fn, (0, 0.0, 0.0))[1]) * 1000 / calls,
            "self_us": (s - before.get(fn, (0, 0.0, 0.0))[2]) * 1000 / calls,
        }
        for fn, (c, t, s) in after.items()
        if c > before.get(fn, (0, 0.0, 0.0))[0]
    }
    bare_us = prof.time_calls(GROWTH_SQL["bare"], path, calls)
    start = time.perf_counter_ns()
    for _ in range(calls):
        conn.execute(SQL["select1"], prepare=True).fetchall()
    select1_us = (time.perf_counter_ns() - start) / calls / 1000

    # Pass 2: plprofiler, per line, in a session of its own (it profiles only
    # functions first called in the session after it was enabled).
    with psycopg.connect(conninfo, autocommit=True) as conn2:
        conn2.execute(SQL["load_plprofiler"])
        conn2.execute(SQL["enable_plprofiler"])
        prof2 = Profiler(conn2, prof.keys, prof.orgs, prof)
        prof2.time_calls(call, path, warmup)
        conn2.execute(SQL["reset_plprofiler"])
        profiled_us = prof2.time_calls(call, path, calls)
        totals = {
            line: total / calls
            for line, _count, total in conn2.execute(SQL["linestats"], {"function": function})
        }
        source_row = conn2.execute(SQL["source"], {"function": function}).fetchone()
    assert source_row is not None
    per_section, detail = sections(source_row[0], totals)
    return {
        "function": function,
        "path": path,
        "calls": calls,
        "client_us": client_us,
        "bare_client_us": bare_us,
        "select1_client_us": select1_us,
        "track_functions": tracked,
        "profiled_client_us": profiled_us,
        "body_us": totals.get(0, 0.0),
        "sections_us": per_section,
        "lines": detail,
    }


def print_report(report: dict[str, Any]) -> None:
    for function, runs in report["profiles"].items():
        by_path = {r["path"]: r for r in runs}
        print(f"\n{function}: microseconds per call")
        print(f"{'':<38}" + "".join(f"{p:>9}" for p in PATHS))

        def row(label: str, values: list[float]) -> None:
            print(f"{label:<38}" + "".join(f"{v:>9.1f}" for v in values))

        row("call seen from Python", [by_path[p]["client_us"] for p in PATHS])
        row("  bare statement, same way", [by_path[p]["bare_client_us"] for p in PATHS])
        row("  SELECT 1, same way", [by_path[p]["select1_client_us"] for p in PATHS])
        fns = sorted({fn for p in PATHS for fn in by_path[p]["track_functions"]})
        for fn in fns:
            row(
                f"  track_functions {fn.removeprefix('cmis.')[:20]}",
                [by_path[p]["track_functions"].get(fn, {}).get("total_us", 0.0) for p in PATHS],
            )
        row(
            "with plprofiler: call seen from Python",
            [by_path[p]["profiled_client_us"] for p in PATHS],
        )
        row("  function body (plprofiler line 0)", [by_path[p]["body_us"] for p in PATHS])
        for name in SECTIONS:
            row(f"    {name}", [by_path[p]["sections_us"][name] for p in PATHS])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per path and pass")
    parser.add_argument("--warmup", type=int, default=300, help="untimed calls before each")
    parser.add_argument("--keys", type=int, default=100_000, help="seeded keys (100000)")
    parser.add_argument("--orgs", type=int, default=1_000, help="seeded orgs (1000)")
    parser.add_argument("--variant", type=Path, help="SQL file creating a variant to profile")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 calls")
    parser.add_argument("--database", default="cmis_bench_profile", help="scratch database")
    parser.add_argument("--output", type=Path, default=RESULTS / "function_profile.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.warmup, args.keys = 300, 50, 20_000
    functions = [OUR_FUNCTION]
    with (
        scratch_database(args.database) as conninfo,
        psycopg.connect(conninfo, autocommit=True) as conn,
    ):
        seed(conn, keys=args.keys, orgs=args.orgs)
        conn.execute(SQL["install_plprofiler"])
        if args.variant:
            text = args.variant.read_text("utf-8")
            functions.append(function_name(text))
            conn.execute(text)
        conn.execute(SQL["track_functions"])
        prof = Profiler(conn, args.keys, args.orgs)
        profiles: dict[str, list[dict[str, Any]]] = {}
        for path in PATHS:
            for function in functions:
                print(f"profiling {function} {path}", file=sys.stderr)
                profiles.setdefault(function, []).append(
                    profile(prof, conninfo, function, path, args.calls, args.warmup)
                )
    settings = vars(args) | {"variant": str(args.variant), "output": str(args.output)}
    report = {"benchmark": "function_profile", "settings": settings, "profiles": profiles}
    print_report(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
