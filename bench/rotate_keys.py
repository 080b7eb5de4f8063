"""Benchmark: ``cmis-repo rotate-keys`` over 100,000 rows.

Run: ``.venv/bin/python -m bench.rotate_keys`` (``--rows``, ``--orgs``, ``--batch-size``).

It creates (and drops) a scratch database ``cmis_bench_rotate_keys`` on the
server that ``$DATABASE_URL`` or libpq's defaults name, migrates it, COPYs in
rows over many organisations (a fifth of them soft-deleted) with both tokens
encrypted under an old key, then runs the rotation through the function the
command uses (:func:`cmis_repo.rotation.rotate_keys`) with a new key and the old
one as previous, on one autocommit connection. It prints rows, batches, wall
time and rows/s, and how much of the time the encryption itself takes.
"""

from __future__ import annotations

import argparse
import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from cmis_repo.database import connect, conninfo_from_env, with_dbname
from cmis_repo.encryption import LaravelEncrypter
from cmis_repo.migrate import migrate
from cmis_repo.queries import parse
from cmis_repo.rotation import DEFAULT_BATCH_SIZE, RotationReport, rotate_keys

DBNAME = "cmis_bench_rotate_keys"

SQL = parse(Path(__file__).with_name("rotate_keys.sql").read_text("utf-8"))


def new_key() -> str:
    return "base64:" + base64.b64encode(os.urandom(32)).decode()


def seed(conn: psycopg.Connection[Any], old: LaravelEncrypter, rows: int, orgs: int) -> None:
    org_ids = [uuid.uuid4() for _ in range(orgs)]
    with conn.cursor() as cur:
        with cur.copy(SQL["copy_orgs"]) as copy:
            for org_id in org_ids:
                copy.write_row((org_id, "bench"))
        with cur.copy(SQL["copy_connections"]) as copy:
            for i in range(rows):
                copy.write_row(
                    (
                        uuid.uuid4(),
                        org_ids[i % orgs],
                        "meta",
                        f"act_{i}",
                        old.encrypt(f"EAAB{i:010d}" + "x" * 180),  # a Meta-sized token
                        old.encrypt(f"refresh-{i}"),
                        "2024-01-01 00:00:00+00" if i % 5 == 0 else None,
                    )
                )
    conn.commit()
    conn.execute(SQL["analyze"])
    conn.commit()


def crypto_seconds_per_value(old: LaravelEncrypter, cipher: LaravelEncrypter) -> float:
    """What rotating one value costs in Python alone: check, decrypt, encrypt."""
    payloads = [old.encrypt(f"EAAB{i:010d}" + "x" * 180) for i in range(10_000)]
    start = time.perf_counter()
    for payload in payloads:
        if not cipher.uses_current_key(payload):
            cipher.encrypt(cipher.decrypt(payload))
    return (time.perf_counter() - start) / len(payloads)


def run(conninfo: str, rows: int, orgs: int, batch_size: int) -> None:
    old_key, new_key_ = new_key(), new_key()
    old = LaravelEncrypter(old_key)
    cipher = LaravelEncrypter(new_key_, [old_key])

    start = time.perf_counter()
    with connect(conninfo) as conn:
        seed(conn, old, rows, orgs)
    print(f"seeded {rows} rows over {orgs} orgs in {time.perf_counter() - start:.1f} s")

    reports: list[RotationReport] = []
    with connect(conninfo, autocommit=True) as conn:
        start = time.perf_counter()
        report = rotate_keys(conn, cipher, batch_size=batch_size, progress=reports.append)
        wall = time.perf_counter() - start
        sample = conn.execute(SQL["sample"]).fetchall()

    expected_values = 2 * rows
    if report.values_reencrypted != expected_values or report.rows_scanned != rows:
        raise SystemExit(f"rotation incomplete: {report}")
    new_only = LaravelEncrypter(new_key_)
    for access, refresh in sample:
        new_only.decrypt(str(access))
        new_only.decrypt(str(refresh))

    crypto = crypto_seconds_per_value(old, cipher) * expected_values
    print(f"rows:            {report.rows_scanned}")
    print(f"values:          {report.values_reencrypted} re-encrypted")
    print(f"batches:         {report.batches} of {batch_size} rows")
    print(f"wall time:       {wall:.2f} s")
    print(f"rows/s:          {report.rows_scanned / wall:,.0f}")
    print(f"of which crypto: ~{crypto:.2f} s in Python (measured apart on 10,000 values)")
    print(f"checked:         {len(sample)} sampled rows decrypt under the new key alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--orgs", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args()

    admin = conninfo_from_env()
    with connect(admin, autocommit=True) as conn:
        conn.execute(SQL["drop_database"])
        conn.execute(SQL["create_database"])
    bench_db = with_dbname(admin, DBNAME)
    try:
        migrate(bench_db)
        run(bench_db, args.rows, args.orgs, args.batch_size)
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(SQL["drop_database"])


if __name__ == "__main__":
    main()
