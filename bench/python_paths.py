"""Benchmark: the Python paths, ``repo.upsert`` against what users write by hand.

Run: ``.venv/bin/python -m bench.python_paths`` (about 5 minutes; ``--quick`` for
a smoke run under 30 s; final runs under ``flock /tmp/cmis_bench.lock``).

Two scratch databases, each seeded alike with ``bench.dataset.seed`` (100k keys
over 1,000 orgs, 30 % soft-deleted, one key in fifty with two older deleted
rows): ``repo.upsert`` ("ours") works on one, the ORM pattern ("baseline") on
the other, so that both sides run the same key sequence from the same state.
Every connection is in autocommit mode: each ``repo.upsert`` is its own
transaction (one statement, one round trip); the ORM pattern opens its own
transaction (``BEGIN``, look-up, [restore,] update or insert, ``COMMIT``), as
Laravel's ``DB::transaction`` does over PDO's autocommit. The ORM statements
are in ``bench/python_paths.sql``. Ours and the baseline alternate in every
round (the order flips each round); figures are medians over the rounds, the
ratio the median of the per-round ratios ours / baseline in ops/s (above 1:
ours is faster).

1. throughput: a mixed workload, 70 % updates of live keys, 20 % reconnects of
   soft-deleted keys, 10 % creates of new keys, at 1 and 8 threads (one
   connection each); every op touches a key of its own, the same sequence on
   both sides. At 1 thread the two sides alternate op by op (each side's time
   summed apart); at 8, in chunks. Targets: ours >= 2x the baseline at 1
   thread, >= 1.5x at 8. Diagnostics, not targets: the floors (a round trip,
   ``SELECT 1``; an autocommit statement whose commit flushes WAL), the mean
   time per op by kind at 1 thread, the same mix again with
   ``synchronous_commit = off`` on both sides (no WAL flush per commit), and
   at 1 thread a floor: the cheapest one-statement write (a bare ``INSERT ...
   ON CONFLICT DO UPDATE RETURNING *``, which never restores; on a third
   database seeded alike) in place of ``repo.upsert``.
2. hot keys: 8 threads hammer 4 keys (2 new, 2 soft-deleted with history) with
   connect (70 %) and disconnect (30 %), in episodes that start together
   (a barrier), 4 fresh keys per episode, the same op sequence on both sides.
   Counted per side: errors (exceptions, by SQLSTATE), duplicate rows (a row
   created for a key that already had a row, live or deleted: restore-or-create
   must have restored it instead), keys with more than one live row, and lost
   reconnects (a connect that returned normally but left the key's row
   soft-deleted: it updated a row a concurrent disconnect had just deleted).
   Ours must show zero of each.
3. thin layer: ``repo.upsert`` against ``conn.execute(<queries.sql's upsert>,
   params).fetchone()`` on the same connection, same keys (updates of live
   keys), single thread: >= 0.90x; without a cipher, and with the Laravel
   cipher where (a) the raw side encrypts the same two tokens itself inside
   its timed loop; and (b) the cost of the cipher alone, per call. Per key,
   every method runs once in turn (the order rotating), each call timed.
4. experiment, not a target: the mix of 1. again through a TCP proxy (a
   process of its own) that delays every message ``--one-way-ms`` (0.25 ms)
   each way, i.e. the database across a network; the round trip is measured.

Results go to ``bench/results/python_paths.json``: "results" (the ratio entries),
"hot_keys" (per side), "cipher_cost_us_per_call", "diagnostics", "meta".
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import queue
import random
import socket
import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import RowFactory
from psycopg.types.json import Jsonb

from bench.dataset import Key, is_deleted, key, scratch_database, seed
from cmis_repo import LaravelEncrypter, PlatformConnectionRepository, RepositoryError
from cmis_repo.database import connect
from cmis_repo.queries import parse, query

SQL = parse(Path(__file__).with_name("python_paths.sql").read_text("utf-8"))
RESULTS = Path(__file__).with_name("results") / "python_paths.json"
#: The statement repo.upsert runs, verbatim from cmis_repo/queries.sql.
UPSERT = query("upsert")
#: The same, calling the function a --proposal file installs (experiment).
PROPOSED_UPSERT = UPSERT.replace(
    "cmis.upsert_platform_connection(", "cmis.upsert_platform_connection_proposed("
)
T = TypeVar("T")

Conn = psycopg.Connection[Any]

ORGS = 1_000
THREADS = (1, 8)
#: ours / baseline throughput, by threads.
TARGETS = {1: 2.0, 8: 1.5}
THIN_TARGET = 0.90
WEIGHTS = {"update": 70, "reconnect": 20, "create": 10}
HOT_THREADS = 8
HOT_CONNECT_SHARE = 0.7

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
SCOPES = ["ads_read", "ads_management"]


@dataclass(frozen=True)
class Profile:
    keys: int
    rounds: int
    ops: dict[int, int]  # ops per round, by threads
    hot_episodes: int
    hot_ops: int  # ops per thread per episode
    thin_rounds: int
    thin_calls: int
    diag_rounds: int  # of the synchronous_commit off diagnostic
    net_rounds: int  # of the network experiment
    net_ops: dict[int, int]


QUICK = Profile(10_000, 2, {1: 200, 8: 480}, 6, 12, 4, 100, 1, 1, {1: 60, 8: 160})
FULL = Profile(100_000, 9, {1: 1_200, 8: 3_200}, 40, 16, 40, 300, 5, 5, {1: 300, 8: 800})


# --- what an op writes ---------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    kind: str
    n: int
    key: Key


def values(n: int) -> dict[str, Any]:
    """The fields a connect of key ``n`` writes (both sides, the same values)."""
    return {
        "account_name": f"Account {n}",
        "access_token": f"EAAG{n:012d}" + "a" * 180,
        "refresh_token": f"rt{n:012d}" + "r" * 60,
        "token_expires_at": EXPIRES,
        "scopes": SCOPES,
    }


def key_params(k: Key) -> dict[str, Any]:
    return {"org_id": k.org_id, "platform": k.platform, "account_id": k.account_id}


# --- the two sides ---------------------------------------------------------------------


class Side(Protocol):
    name: str

    def connect(self, worker: int, k: Key, n: int) -> bool:
        """Connect (restore-or-create); True when the key's row is left soft-deleted."""
        ...

    def disconnect(self, worker: int, k: Key) -> None: ...


class OrmPattern:
    """The hand-written fix: in a transaction, find with trashed, restore, update, or insert."""

    name = "ORM pattern"

    def __init__(self, conns: Sequence[Conn]) -> None:
        self.conns = conns

    def connect(self, worker: int, k: Key, n: int) -> bool:
        conn = self.conns[worker]
        fields = values(n)
        fields["scopes"] = Jsonb(fields["scopes"])
        with conn.transaction():
            found = conn.execute(SQL["orm_find_with_trashed"], key_params(k)).fetchone()
            if found is None:
                params = {**key_params(k), **fields, "connection_id": uuid.uuid4()}
                conn.execute(SQL["orm_insert"], params)
                return False
            connection_id, deleted_at = found[0], found[1]
            if deleted_at is not None:
                conn.execute(SQL["orm_restore"], {"connection_id": connection_id})
            stored = conn.execute(
                SQL["orm_update"], {**fields, "connection_id": connection_id}
            ).fetchone()
        return stored is not None and stored[0] is not None

    def disconnect(self, worker: int, k: Key) -> None:
        self.conns[worker].execute(SQL["orm_soft_delete"], key_params(k))


class BareStatement:
    """Not a design: the cheapest one-statement write, a floor for any one-call upsert.

    ``INSERT ... ON CONFLICT (key) WHERE deleted_at IS NULL DO UPDATE ...
    RETURNING *``: one round trip, no checks, no lock, never restores (a
    reconnect inserts a new row). Timed at 1 thread beside the two sides.
    """

    name = "bare statement"

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def connect(self, worker: int, k: Key, n: int) -> bool:
        fields = values(n)
        fields["scopes"] = Jsonb(fields["scopes"])
        self.conn.execute(SQL["bare_upsert"], {**key_params(k), **fields}).fetchone()
        return False

    def disconnect(self, worker: int, k: Key) -> None:
        raise NotImplementedError


class ProposedFunctionRepository(PlatformConnectionRepository):
    """EXPERIMENT: the repository unchanged, but its upsert statement calls the function a
    ``--proposal`` file installs as ``cmis.upsert_platform_connection_proposed``."""

    def _fetch(
        self, name: str, params: Mapping[str, object], row_factory: RowFactory[T]
    ) -> list[T]:
        if name != "upsert":
            return super()._fetch(name, params, row_factory)
        with self._conn.cursor(row_factory=row_factory) as cur:
            cur.execute(PROPOSED_UPSERT, params)
            return cur.fetchall()


class Ours:
    """``repo.upsert``; a disconnect is ``repo.soft_delete`` of the id an upsert returned."""

    name = "repo.upsert"

    def __init__(
        self,
        conns: Sequence[Conn],
        repository: type[PlatformConnectionRepository] = PlatformConnectionRepository,
    ) -> None:
        self.conns = conns
        self.repos = [repository(conn) for conn in conns]
        self.ids: dict[Key, uuid.UUID] = {}

    def connect(self, worker: int, k: Key, n: int) -> bool:
        result = self.repos[worker].upsert(k.org_id, k.platform, k.account_id, **values(n))
        self.ids[k] = result.connection.connection_id
        return result.connection.deleted_at is not None

    def disconnect(self, worker: int, k: Key) -> None:
        # The UI disconnects a connection it shows, by id; none known yet: nothing to do.
        known = self.ids.get(k)
        if known is not None:
            self.repos[worker].soft_delete(k.org_id, known)


def run_threads(work: Callable[[int], None], threads: int) -> float:
    """Run ``work(worker)`` on ``threads`` threads started together; the wall time."""
    barrier = threading.Barrier(threads + 1)
    failures: list[BaseException] = []

    def body(worker: int) -> None:
        barrier.wait()
        try:
            work(worker)
        except BaseException as error:  # re-raised in the main thread
            failures.append(error)

    pool = [threading.Thread(target=body, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    return elapsed


# --- 1. throughput -----------------------------------------------------------------------


class Plan:
    """Ops over the seeded keys, each key used once: 70 % live, 20 % deleted, 10 % new."""

    def __init__(self, keys: int, reserved: set[int]) -> None:
        self.rng = random.Random(20240601)
        pools: dict[str, list[int]] = {"update": [], "reconnect": []}
        for n in range(1, keys + 1):
            if n not in reserved:
                pools["reconnect" if is_deleted(n) else "update"].append(n)
        for pool in pools.values():
            self.rng.shuffle(pool)
        self.pools = pools
        self.next_new = keys * 10 + 1  # beyond the seed and the hot keys' new ones

    def take(self, count: int) -> list[Op]:
        kinds = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=count)
        ops = []
        for kind in kinds:
            if kind == "create":
                n, self.next_new = self.next_new, self.next_new + 1
            else:
                n = self.pools[kind].pop()
            ops.append(Op(kind, n, key(n, ORGS)))
        return ops


def chunk_rate(side: Side, ops: list[Op], threads: int) -> float:
    """ops/s of ``side`` running ``ops`` on ``threads`` threads, op i on worker i % threads."""
    chunks = [ops[w::threads] for w in range(threads)]

    def work(worker: int) -> None:
        for op in chunks[worker]:
            side.connect(worker, op.key, op.n)

    return len(ops) / run_threads(work, threads)


def alternating_rates(
    order: list[tuple[str, Side]], ops: list[Op], spent: dict[tuple[str, str], float]
) -> dict[str, float]:
    """One thread, each op on every side in turn: ops/s per side; adds seconds by (side, kind)."""
    total = dict.fromkeys((name for name, _ in order), 0.0)
    for op in ops:
        for name, side in order:
            start = time.perf_counter()
            side.connect(0, op.key, op.n)
            elapsed = time.perf_counter() - start
            total[name] += elapsed
            spent[name, op.kind] += elapsed
    return {name: len(ops) / seconds for name, seconds in total.items()}


def set_synchronous_commit(conns: Sequence[Conn], value: str) -> None:
    for conn in conns:
        conn.execute(SQL["set_synchronous_commit"], {"value": value})


@dataclass(frozen=True)
class Extra:
    """A side timed beside the two, compared with the ORM pattern; not a target."""

    side: Side
    conns: Sequence[Conn]
    label: str  # for the table and the JSON entry
    threads: tuple[int, ...]


def throughput(
    ours: Ours,
    orm: OrmPattern,
    profile: Profile,
    plan: Plan,
    *,
    extras: dict[str, Extra] | None = None,
    network: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The mix at 1 and 8 threads; over the proxy (``network``) only with synchronous commits."""
    extras = extras or {}
    if not network:
        print(
            "\n1. mixed workload: 70 % updates of live keys, 20 % reconnects of deleted keys, "
            "10 % creates; autocommit"
        )
    conns = [*ours.conns, *orm.conns, *(c for extra in extras.values() for c in extra.conns)]
    sides: dict[str, Side] = {"ours": ours, "orm": orm}
    sides.update((name, extra.side) for name, extra in extras.items())
    for threads in THREADS:  # warm-up: caches, prepared statements
        ops = plan.take(threads * 20)
        for name, side in sides.items():
            if name in ("ours", "orm") or threads in extras[name].threads:
                chunk_rate(side, ops, threads)
    entries, per_kind = [], {}
    runs: list[tuple[str, str, int]] = [
        ("mixed", "on", profile.rounds),
        ("diagnostic, synchronous_commit off", "off", profile.diag_rounds),
    ]
    if network:
        runs = [("mixed", "on", profile.net_rounds)]
    sizes = profile.net_ops if network else profile.ops
    for label, sync, rounds in runs:
        set_synchronous_commit(conns, sync)
        samples: dict[tuple[int, str], list[float]] = defaultdict(list)
        ratios: dict[tuple[int, str], list[float]] = defaultdict(list)
        spent: dict[tuple[str, str], float] = defaultdict(float)
        done: Counter[str] = Counter()
        for r in range(rounds):
            for threads in THREADS:
                ops = plan.take(sizes[threads])
                order = [
                    (name, side)
                    for name, side in sides.items()
                    if name in ("ours", "orm") or threads in extras[name].threads
                ]
                shift = r % len(order)
                order = order[shift:] + order[:shift]
                if threads == 1:
                    got = alternating_rates(order, ops, spent)
                    done.update(op.kind for op in ops)
                else:
                    got = {name: chunk_rate(side, ops, threads) for name, side in order}
                for name, rate in got.items():
                    samples[threads, name].append(rate)
                    ratios[threads, name].append(rate / got["orm"])
        print(f"\n{label}: {rounds} rounds of {sizes} ops by threads; medians")
        print(
            f"{'threads':>7} {'repo.upsert ops/s':>18} {'ORM pattern ops/s':>18} "
            f"{'ratio':>6}  target"
        )
        for threads in THREADS:
            mine = statistics.median(samples[threads, "ours"])
            base = statistics.median(samples[threads, "orm"])
            ratio = statistics.median(ratios[threads, "ours"])
            item = entry(f"{label}: repo.upsert vs ORM pattern", threads, mine, base, ratio)
            target = ""
            if sync == "on" and not network:
                item["target"] = TARGETS[threads]
                target = f">= {TARGETS[threads]} {'met' if ratio >= TARGETS[threads] else 'MISSED'}"
            print(f"{threads:>7} {mine:>18.0f} {base:>18.0f} {ratio:>6.2f}  {target}")
            entries.append(item)
        for name, extra in extras.items():
            for threads in extra.threads:
                rate = statistics.median(samples[threads, name])
                base = statistics.median(samples[threads, "orm"])
                ratio = statistics.median(ratios[threads, name])
                print(f"{threads:>7} {rate:>18.0f} {base:>18.0f} {ratio:>6.2f}  ({extra.label})")
                entries.append(
                    entry(f"{label}, {extra.label} vs ORM pattern", threads, rate, base, ratio)
                )
        kinds = {
            kind: {
                name: round(spent[name, kind] / done[kind] * 1e6, 1)
                for name in sides
                if (name, kind) in spent
            }
            for kind in WEIGHTS
        }
        per_kind[label] = kinds
        print(
            "1 thread, µs per op by kind: "
            + "; ".join(
                kind + " " + " / ".join(f"{name} {us:.0f}" for name, us in t.items())
                for kind, t in kinds.items()
            )
        )
    set_synchronous_commit(conns, "on")
    return entries, per_kind


def floors(conn: Conn, calls: int, rounds: int) -> dict[str, float]:
    """Round trip (SELECT 1) and the same with a commit that flushes WAL, µs, medians."""
    times: dict[str, list[float]] = {"select_1_us": [], "commit_flush_us": []}
    for _ in range(rounds):
        for name, statement in (("select_1_us", "select_1"), ("commit_flush_us", "commit_flush")):
            start = time.perf_counter()
            for _ in range(calls):
                conn.execute(SQL[statement]).fetchone()
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    got = {name: round(statistics.median(samples), 1) for name, samples in times.items()}
    print(
        f"floors: a round trip (SELECT 1) {got['select_1_us']:.0f} µs; an autocommit statement "
        f"that writes a commit record (flushed) {got['commit_flush_us']:.0f} µs"
    )
    return got


def entry(
    scenario: str, threads: int, ours: float, baseline: float, ratio: float
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "threads": threads,
        "ours": round(ours, 1),
        "baseline": round(baseline, 1),
        "ratio": round(ratio, 3),
        "unit": "ops/s",
    }


# --- 2. hot keys -------------------------------------------------------------------------


@dataclass
class HotTally:
    ops: int = 0
    seconds: float = 0.0
    connects: int = 0
    disconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lost_reconnects: int = 0


def hot_key_numbers(episode: int, keys: int) -> list[int]:
    """Episode's 4 keys: 2 never used (new), 2 seeded deleted keys with history (n % 100 == 0)."""
    fresh = keys * 5 + 2 * episode
    return [fresh + 1, fresh + 2, 100 * (2 * episode + 1), 100 * (2 * episode + 2)]


def hot_script(episode: int, worker: int, count: int) -> list[tuple[int, bool]]:
    """Worker's ops in an episode: (key index 0..3, True for connect), the same for both sides."""
    rng = random.Random(episode * 1000 + worker)
    return [(rng.randrange(4), rng.random() < HOT_CONNECT_SHARE) for _ in range(count)]


def run_episode(side: Side, episode: int, keys: int, profile: Profile, tally: HotTally) -> None:
    numbers = hot_key_numbers(episode, keys)
    hot = [key(n, ORGS) for n in numbers]
    lock = threading.Lock()

    def work(worker: int) -> None:
        for index, is_connect in hot_script(episode, worker, profile.hot_ops):
            k = hot[index]
            try:
                if is_connect:
                    lost = side.connect(worker, k, numbers[index])
                    with lock:
                        tally.connects += 1
                        tally.lost_reconnects += lost
                else:
                    side.disconnect(worker, k)
                    with lock:
                        tally.disconnects += 1
            except (psycopg.Error, RepositoryError) as error:
                with lock:
                    tally.errors[error.sqlstate or type(error).__name__] += 1

    tally.seconds += run_threads(work, HOT_THREADS)
    tally.ops += HOT_THREADS * profile.hot_ops


def key_counts(conn: Conn, keys: list[Key], since: datetime) -> list[tuple[int, int, int]]:
    rows = conn.execute(
        SQL["key_counts"],
        {
            "org_ids": [k.org_id for k in keys],
            "platforms": [k.platform for k in keys],
            "account_ids": [k.account_id for k in keys],
            "since": since,
        },
    ).fetchall()
    return [(int(r[1]), int(r[2]), int(r[3])) for r in rows]


def hot_keys(sides: dict[str, tuple[Side, Conn]], profile: Profile) -> list[dict[str, Any]]:
    print(
        f"\n2. hot keys: {HOT_THREADS} threads on 4 keys (2 new, 2 deleted with history), "
        f"{HOT_CONNECT_SHARE:.0%} connect / {1 - HOT_CONNECT_SHARE:.0%} disconnect, "
        f"{profile.hot_episodes} episodes x {HOT_THREADS} x {profile.hot_ops} ops per side"
    )
    keys = profile.keys
    all_keys = [key(n, ORGS) for e in range(profile.hot_episodes) for n in hot_key_numbers(e, keys)]
    tallies = {name: HotTally() for name in sides}
    before, since = {}, {}
    for name, (_, conn) in sides.items():
        row = conn.execute(SQL["now"]).fetchone()
        assert row is not None
        since[name] = row[0]
        before[name] = key_counts(conn, all_keys, since[name])
    for episode in range(profile.hot_episodes):
        order = list(sides.items())
        if episode % 2:
            order.reverse()
        for name, (side, _) in order:
            run_episode(side, episode, keys, profile, tallies[name])
    results = []
    print(
        f"{'side':<12} {'ops/s':>7} {'errors':>7} {'by SQLSTATE':<18} {'duplicates':>10} "
        f"{'>1 live':>7} {'lost reconnects':>15}"
    )
    for name, (_, conn) in sides.items():
        after = key_counts(conn, all_keys, since[name])
        duplicates = 0
        for (rows_before, _, _), (_, _, created) in zip(before[name], after, strict=True):
            # The first row of a key that had none is a create; every other row made is a duplicate.
            duplicates += created - (1 if rows_before == 0 and created > 0 else 0)
        multi_live = sum(1 for _, live, _ in after if live > 1)
        tally = tallies[name]
        errors = sum(tally.errors.values())
        by_state = ", ".join(f"{s}: {c}" for s, c in sorted(tally.errors.items())) or "-"
        label = "ours" if isinstance(sides[name][0], Ours) else "ORM pattern"
        print(
            f"{label:<12} {tally.ops / tally.seconds:>7.0f} {errors:>7} {by_state:<18} "
            f"{duplicates:>10} {multi_live:>7} {tally.lost_reconnects:>15}"
        )
        results.append(
            {
                "side": label,
                "threads": HOT_THREADS,
                "hot_keys": 4,
                "episodes": profile.hot_episodes,
                "ops": tally.ops,
                "connects": tally.connects,
                "disconnects": tally.disconnects,
                "ops_per_s": round(tally.ops / tally.seconds, 1),
                "errors": errors,
                "errors_by_sqlstate": dict(tally.errors),
                "duplicate_rows": duplicates,
                "keys_with_more_than_one_live_row": multi_live,
                "lost_reconnects": tally.lost_reconnects,
            }
        )
    return results


# --- 3. thin layer -----------------------------------------------------------------------


def thin_layer(
    conn: Conn, numbers: list[int], profile: Profile
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    print(
        f"\n3. thin layer: 1 thread, autocommit, updates of the same {len(numbers)} live keys "
        f"each round; per key, every method once in turn (order rotating)"
    )
    cipher = LaravelEncrypter("base64:" + base64.b64encode(os.urandom(32)).decode("ascii"))
    plain_repo = PlatformConnectionRepository(conn)
    cipher_repo = PlatformConnectionRepository(conn, cipher=cipher)

    def raw_params(k: Key, v: dict[str, Any], access: str, refresh: str) -> dict[str, Any]:
        # What repo.upsert binds: every argument, None for those not given.
        return {
            **key_params(k),
            "account_name": v["account_name"],
            "status": "active",
            "access_token": access,
            "refresh_token": refresh,
            "token_expires_at": v["token_expires_at"],
            "scopes": Jsonb(v["scopes"]),
            "account_metadata": None,
            "auto_sync": None,
            "sync_frequency_minutes": None,
        }

    def repo(k: Key, v: dict[str, Any]) -> None:
        plain_repo.upsert(k.org_id, k.platform, k.account_id, **v)

    def raw(k: Key, v: dict[str, Any]) -> None:
        params = raw_params(k, v, v["access_token"], v["refresh_token"])
        conn.execute(UPSERT, params).fetchone()

    def repo_with_cipher(k: Key, v: dict[str, Any]) -> None:
        cipher_repo.upsert(k.org_id, k.platform, k.account_id, **v)

    def raw_encrypting(k: Key, v: dict[str, Any]) -> None:
        access, refresh = cipher.encrypt(v["access_token"]), cipher.encrypt(v["refresh_token"])
        conn.execute(UPSERT, raw_params(k, v, access, refresh)).fetchone()

    def encrypt_only(k: Key, v: dict[str, Any]) -> None:
        cipher.encrypt(v["access_token"])
        cipher.encrypt(v["refresh_token"])

    def decrypt_only(k: Key, v: dict[str, Any]) -> None:
        cipher.decrypt(v["sealed_access"])
        cipher.decrypt(v["sealed_refresh"])

    methods: dict[str, Callable[[Key, dict[str, Any]], None]] = {
        "repo": repo,
        "raw": raw,
        "repo+cipher": repo_with_cipher,
        "raw+encrypt": raw_encrypting,
        "encrypt only": encrypt_only,
        "decrypt only": decrypt_only,
    }
    calls = []
    for n in numbers:
        v = values(n)
        sealed = {
            "sealed_access": cipher.encrypt(v["access_token"]),
            "sealed_refresh": cipher.encrypt(v["refresh_token"]),
        }
        calls.append((key(n, ORGS), v, sealed))
    for k, v, sealed in calls[:20]:  # warm-up
        for name, method in methods.items():
            method(k, {**v, **sealed} if name == "decrypt only" else v)
    names = list(methods)
    us: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(profile.thin_rounds):
        spent = dict.fromkeys(names, 0.0)
        for i, (k, v, sealed) in enumerate(calls):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                method = methods[name]
                args = {**v, **sealed} if name == "decrypt only" else v
                start = time.perf_counter()
                method(k, args)
                spent[name] += time.perf_counter() - start
        for name, seconds in spent.items():
            us[name].append(seconds / len(calls) * 1e6)

    def ratio(mine: str, base: str) -> float:
        # ops/s ours / ops/s baseline = time baseline / time ours, per round.
        return statistics.median(b / m for m, b in zip(us[mine], us[base], strict=True))

    med = {name: statistics.median(samples) for name, samples in us.items()}
    rows = [
        ("no cipher: repo.upsert vs raw execute", "repo", "raw"),
        (
            "cipher (a): repo.upsert vs raw execute encrypting the same tokens",
            "repo+cipher",
            "raw+encrypt",
        ),
        ("cipher, end to end: repo.upsert with cipher vs without", "repo+cipher", "repo"),
    ]
    print(f"{profile.thin_rounds} rounds x {len(calls)} keys; medians")
    print(f"{'scenario':<66} {'ours µs':>8} {'base µs':>8} {'ratio':>6}  target")
    entries = []
    for label, mine, base in rows:
        value = ratio(mine, base)
        target = ""
        if base != "repo":
            target = f">= {THIN_TARGET} {'met' if value >= THIN_TARGET else 'MISSED'}"
        print(f"{label:<66} {med[mine]:>8.1f} {med[base]:>8.1f} {value:>6.2f}  {target}")
        entries.append(entry(f"thin layer, {label}", 1, 1e6 / med[mine], 1e6 / med[base], value))
        if target:
            entries[-1]["target"] = THIN_TARGET
    cost = {
        "encrypt_both_tokens_us": round(med["encrypt only"], 2),
        "decrypt_both_tokens_us": round(med["decrypt only"], 2),
        "repo_upsert_us": round(med["repo"], 2),
        "repo_upsert_with_cipher_us": round(med["repo+cipher"], 2),
        "raw_execute_us": round(med["raw"], 2),
        "raw_execute_encrypting_us": round(med["raw+encrypt"], 2),
    }
    print(
        f"cipher (b), the cipher alone per call: encrypt both tokens {med['encrypt only']:.1f} µs "
        f"(what an upsert pays: the returned payloads are its own, not decrypted); decrypt both "
        f"{med['decrypt only']:.1f} µs (what a read pays)"
    )
    return entries, cost


# --- 4. experiment: the same mix over a network link ----------------------------------------


def _pump(source: socket.socket, target: socket.socket, delay: float) -> None:
    """Copy ``source`` to ``target``, each chunk ``delay`` seconds late, in order."""
    chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def send() -> None:
        while True:
            due, data = chunks.get()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)
            except OSError:
                return

    threading.Thread(target=send, daemon=True).start()
    try:
        while data := source.recv(65536):
            chunks.put((time.monotonic() + delay, data))
    except OSError:
        pass
    chunks.put((time.monotonic() + delay, b""))


def serve_delayed(ready: Any, host: str, port: int, one_way: float) -> None:
    """A TCP proxy to the server that delays every message by ``one_way`` seconds each way.

    Runs in a process of its own (threads, precise sleeps); sends its port on
    ``ready``. The resulting round trip is measured (SELECT 1) and reported.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    ready.send(listener.getsockname()[1])
    while True:
        client, _ = listener.accept()
        if host.startswith("/"):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(f"{host}/.s.PGSQL.{port}")
        else:
            upstream = socket.create_connection((host, port))
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, target, one_way), daemon=True).start()


def network(
    ours_db: str, orm_db: str, profile: Profile, plan: Plan, one_way: float
) -> tuple[list[dict[str, Any]], float]:
    with connect(ours_db) as probe:
        host, port = probe.info.host, probe.info.port
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    proxy = context.Process(target=serve_delayed, args=(send, host, port, one_way), daemon=True)
    proxy.start()
    try:
        proxy_port = receive.recv()
        via = {"host": "127.0.0.1", "port": proxy_port}
        ours_conns = [connect(make_conninfo(ours_db, **via), autocommit=True) for _ in range(8)]
        orm_conns = [connect(make_conninfo(orm_db, **via), autocommit=True) for _ in range(8)]
        try:
            rtt = floors(ours_conns[0], 50, 3)["select_1_us"]
            print(
                f"\n4. experiment, not a target: the mix through a TCP proxy that delays each "
                f"message (round trip measured: {rtt / 1000:.2f} ms)"
            )
            found, _ = throughput(
                Ours(ours_conns), OrmPattern(orm_conns), profile, plan, network=True
            )
        finally:
            for conn in (*ours_conns, *orm_conns):
                conn.close()
    finally:
        proxy.terminate()
        proxy.join()
    for item in found:
        item["scenario"] = f"experiment, {rtt / 1000:.2f} ms round trip: " + item["scenario"]
    return found, rtt


# --- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, under 30 s")
    parser.add_argument(
        "--only",
        choices=("throughput", "hot", "thin", "network"),
        action="append",
        help="run only these parts",
    )
    parser.add_argument(
        "--one-way-ms",
        type=float,
        default=0.25,
        help="the network experiment's added delay per message, each way (default 0.25)",
    )
    parser.add_argument(
        "--proposal",
        type=Path,
        help="experiment: a SQL file creating cmis.upsert_platform_connection_proposed "
        "(a rewrite of sql/procedures/10_..., renamed), timed from Python in part 1 too",
    )
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    parts = set(args.only or ("throughput", "hot", "thin", "network"))
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]

    with ExitStack() as stack:
        databases = ["ours", "orm", "bare"] + (["proposal"] if args.proposal else [])
        conninfos = {
            name: stack.enter_context(scratch_database(f"cmis_bench_pyp_{name}"))
            for name in databases
        }
        for conninfo in conninfos.values():
            with connect(conninfo, autocommit=True) as conn:
                counts = seed(conn, keys=profile.keys, orgs=ORGS)
        print(
            f"each side's database: {counts.rows} rows ({counts.deleted} deleted) "
            f"over {counts.orgs} orgs"
        )
        pools = {
            name: [
                stack.enter_context(connect(conninfo, autocommit=True))
                for _ in range(1 if name == "bare" else max(THREADS))
            ]
            for name, conninfo in conninfos.items()
        }
        ours, orm = Ours(pools["ours"]), OrmPattern(pools["orm"])
        extras = {
            "bare": Extra(
                BareStatement(pools["bare"][0]),
                pools["bare"],
                "floor (not a design): bare one-statement upsert",
                (1,),
            )
        }
        if args.proposal:
            pools["proposal"][0].execute(args.proposal.read_text("utf-8").encode())
            extras["proposal"] = Extra(
                Ours(pools["proposal"], ProposedFunctionRepository),
                pools["proposal"],
                f"experiment: repo.upsert over {args.proposal.name}'s function",
                THREADS,
            )
        ratios: list[dict[str, Any]] = []
        hot: list[dict[str, Any]] = []
        cost: dict[str, float] = {}
        diagnostics: dict[str, Any] = {}
        reserved = {n for n in range(100, profile.keys + 1, 100)}  # the hot keys' history keys
        plan = Plan(profile.keys, reserved)
        thin_numbers = plan.pools["update"][: profile.thin_calls]
        del plan.pools["update"][: profile.thin_calls]
        if "throughput" in parts:
            diagnostics["floors"] = floors(pools["ours"][0], 200, profile.diag_rounds * 2 + 1)
            found, diagnostics["us_per_op_by_kind_1_thread"] = throughput(
                ours, orm, profile, plan, extras=extras
            )
            ratios += found
        if "hot" in parts:
            hot = hot_keys(
                {"ours": (ours, pools["ours"][0]), "orm": (orm, pools["orm"][0])}, profile
            )
        if "thin" in parts:
            thin, cost = thin_layer(pools["ours"][0], thin_numbers, profile)
            ratios += thin
        if "network" in parts:
            found, diagnostics["network_round_trip_us"] = network(
                conninfos["ours"], conninfos["orm"], profile, plan, args.one_way_ms / 1000
            )
            ratios += found
        for pool in pools.values():  # before the databases are dropped
            for conn in pool:
                conn.close()

    report = {
        "meta": {
            "profile": "quick" if args.quick else "full",
            "keys": profile.keys,
            "orgs": ORGS,
            "transactions": "autocommit: repo.upsert one statement per transaction; the ORM "
            "pattern BEGIN ... COMMIT around its statements",
            "mix_weights": WEIGHTS,
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "hot_key_definitions": {
                "errors": "exceptions raised by a connect or disconnect, by SQLSTATE",
                "duplicate_rows": "rows created for a key that already had a row (live or "
                "soft-deleted) when they were created",
                "keys_with_more_than_one_live_row": "hot keys with two live rows at the end",
                "lost_reconnects": "connects that returned normally but left the key's row "
                "soft-deleted (they updated a row a concurrent disconnect had just deleted)",
            },
            "seconds": round(time.perf_counter() - started, 1),
        },
        "results": ratios,
        "hot_keys": hot,
        "cipher_cost_us_per_call": cost,
        "diagnostics": diagnostics,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwritten to {RESULTS} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
