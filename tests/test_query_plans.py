"""Every look-up of a key in cmis.platform_connections is an index scan, never a Seq Scan.

With 100k rows (2,000 organisations, five platforms, ~30% soft-deleted, many
keys with two or three deleted history rows, some keys with deleted rows
only) and fresh statistics:

(a) EXPLAIN (FORMAT JSON) of the statements the PL/pgSQL functions run and
    of the repository's plain queries (cmis_repo/queries.sql), each planned
    both as a custom plan (values known) and as a generic plan (what
    PL/pgSQL's plan cache switches to after five calls);
(b) the plans of the statements actually executed inside the functions,
    captured with auto_explain (log_nested_statements) as client notices
    while upsert (update, restore and create paths), soft_delete and
    restore run.

Every plan tree is walked: no node may be a Seq Scan on
platform_connections, and a statement that scans it must use one of its
indexes.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from pytest_postgresql.janitor import DatabaseJanitor

from cmis_repo.queries import query

TABLE = "platform_connections"
ORGS = 2000
PLATFORMS = ("meta", "google", "tiktok", "linkedin", "snapchat")

# Keys are numbered k; key k is (org k % 2000, platform (k / 2000) % 5, 'act_<k>').
# Rows 1..71000 are the live rows of keys 1000..71999; rows 71001..100000 are
# deleted rows of keys 0..11999 (three for keys 0..4999, two for the rest).
# Keys 0..999 therefore have deleted rows only: upserting them restores.
GENERATE_ORGS_SQL = """
INSERT INTO cmis.orgs (org_id, name)
SELECT md5('org ' || o)::uuid, 'org ' || o FROM generate_series(0, %(orgs)s - 1) AS o
"""

GENERATE_ROWS_SQL = """
INSERT INTO cmis.platform_connections (
    org_id, platform, account_id, account_name, status, access_token, refresh_token,
    scopes, auto_sync, sync_frequency_minutes, created_at, updated_at, deleted_at)
SELECT md5('org ' || (k %% %(orgs)s))::uuid,
       (%(platforms)s::text[])[1 + (k / %(orgs)s) %% 5],
       'act_' || k, 'Account ' || k,
       (ARRAY['active', 'active', 'active', 'warning', 'expired', 'error'])[1 + n %% 6],
       md5('access ' || n), md5('refresh ' || n), '["ads_read"]', n %% 7 <> 0, 15,
       now() - interval '400 days' + n * interval '1 minute',
       now() - interval '10 days' + n * interval '1 second',
       CASE WHEN deleted THEN now() - interval '1 day' - n * interval '1 minute' END
  FROM (SELECT n, n > 71000 AS deleted,
               CASE WHEN n <= 71000 THEN n + 999 ELSE (n - 71001) %% 12000 END AS k
          FROM generate_series(1, 100000) AS n) AS generated
"""


@dataclass(frozen=True)
class Key:
    org_id: uuid.UUID
    platform: str
    account_id: str


def key(k: int) -> Key:
    """The (org, platform, account) of generated key number k."""
    org_id = uuid.UUID(hashlib.md5(f"org {k % ORGS}".encode(), usedforsecurity=False).hexdigest())
    return Key(org_id, PLATFORMS[(k // ORGS) % 5], f"act_{k}")


#: A key with a live row and three deleted history rows.
LIVE_WITH_HISTORY = key(4321)
#: A key with deleted rows only.
DELETED_ONLY = key(321)


@pytest.fixture(scope="module")
def plans_conninfo(pg_server: Any) -> Iterator[str]:
    """A clone of the migrated template holding the 100k rows, shared by this module."""
    dbname = f"cmis_plans_{uuid.uuid4().hex[:12]}"
    server = {
        "host": pg_server.host,
        "port": pg_server.port,
        "user": pg_server.user,
        "password": pg_server.password or None,
    }
    with DatabaseJanitor(dbname=dbname, template_dbname=pg_server.template_dbname, **server):
        conninfo = make_conninfo(
            dbname=dbname, **{k: v for k, v in server.items() if v is not None}
        )
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with conn.transaction():
                conn.execute(GENERATE_ORGS_SQL, {"orgs": ORGS})
                conn.execute(GENERATE_ROWS_SQL, {"orgs": ORGS, "platforms": list(PLATFORMS)})
            conn.execute("ANALYZE cmis.orgs")
            conn.execute("ANALYZE cmis.platform_connections")
            counts = conn.execute(
                "SELECT count(*), count(deleted_at) FROM cmis.platform_connections"
            ).fetchone()
            assert counts == (100_000, 29_000)
        yield conninfo


@pytest.fixture
def plans_conn(plans_conninfo: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose writes are rolled back after the test."""
    with psycopg.connect(plans_conninfo) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


@pytest.fixture(scope="module")
def table_indexes(plans_conninfo: str) -> set[str]:
    with psycopg.connect(plans_conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'cmis' AND tablename = %s",
            (TABLE,),
        ).fetchall()
    names = {name for (name,) in rows}
    assert {"idx_platform_connections_unique", "idx_platform_connections_lookup"} <= names
    return names


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan tree, sub-plans and init-plans included."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def describe(plan: dict[str, Any], depth: int = 0) -> str:
    """A compact text rendering of a plan tree, for failure messages."""
    parts = [plan["Node Type"]]
    for label in ("Relation Name", "Index Name", "Index Cond", "Filter"):
        if label in plan:
            parts.append(f"{label}: {plan[label]}")
    line = "  " * depth + " | ".join(parts)
    return "\n".join([line, *(describe(child, depth + 1) for child in plan.get("Plans", []))])


def check_plan(plan: dict[str, Any], indexes: set[str], statement: str) -> None:
    """No Seq Scan on the table; a statement that scans it does so through its index."""
    nodes = list(plan_nodes(plan))
    shown = f"{statement}\n{describe(plan)}"
    seq_scans = [
        node
        for node in nodes
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == TABLE
    ]
    assert not seq_scans, f"Seq Scan on {TABLE}:\n{shown}"
    scans_table = any(
        node.get("Relation Name") == TABLE and "Scan" in node["Node Type"] for node in nodes
    )
    if scans_table:
        used = {node["Index Name"] for node in nodes if "Index Name" in node}
        assert used & indexes, f"no index of {TABLE} is used:\n{shown}"


def explain(
    conn: psycopg.Connection[Any], statement: str, params: dict[str, Any], plan_cache_mode: str
) -> dict[str, Any]:
    """EXPLAIN (FORMAT JSON) of a prepared statement, as a custom or a generic plan."""
    names: list[str] = []

    def positional(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    body = re.sub(r"%\((\w+)\)s", positional, statement)
    name = f"plan_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.Literal(plan_cache_mode)))
    conn.execute(sql.SQL("PREPARE {} AS {}").format(sql.Identifier(name), sql.SQL(body)))
    try:
        arguments = sql.SQL(", ").join(sql.Literal(params[n]) for n in names)
        row = conn.execute(
            sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {}({})").format(sql.Identifier(name), arguments)
        ).fetchone()
    finally:
        conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)))
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


# The statements the PL/pgSQL functions run against the table, as written
# there (function arguments become parameters).
FUNCTION_STATEMENTS = {
    "upsert: update the live row of the key": """
        UPDATE cmis.platform_connections AS c
           SET access_token = COALESCE(%(access_token)s::text, c.access_token),
               updated_at = clock_timestamp()
         WHERE c.org_id = %(org_id)s::uuid AND c.platform = %(platform)s::text
           AND c.account_id = %(account_id)s::text AND c.deleted_at IS NULL
        RETURNING c.*""",
    "upsert: select the live row of the key": """
        SELECT * FROM cmis.platform_connections AS c
         WHERE c.org_id = %(org_id)s::uuid AND c.platform = %(platform)s::text
           AND c.account_id = %(account_id)s::text AND c.deleted_at IS NULL""",
    "upsert: newest deleted row of the key": """
        SELECT d.connection_id FROM cmis.platform_connections AS d
         WHERE d.org_id = %(org_id)s::uuid AND d.platform = %(platform)s::text
           AND d.account_id = %(account_id)s::text AND d.deleted_at IS NOT NULL
         ORDER BY d.deleted_at DESC
         LIMIT 1""",
    "upsert: newest deleted row of the key nobody else is changing": """
        SELECT d.connection_id FROM cmis.platform_connections AS d
         WHERE d.org_id = %(org_id)s::uuid AND d.platform = %(platform)s::text
           AND d.account_id = %(account_id)s::text AND d.deleted_at IS NOT NULL
         ORDER BY d.deleted_at DESC
         LIMIT 1
           FOR UPDATE SKIP LOCKED""",
    "upsert: undelete the chosen row and set its values": """
        UPDATE cmis.platform_connections AS c
           SET deleted_at = NULL,
               access_token = COALESCE(%(access_token)s::text, c.access_token),
               updated_at = clock_timestamp()
         WHERE c.connection_id = %(connection_id)s::uuid AND c.deleted_at IS NOT NULL
        RETURNING c.*""",
    "upsert: create when the key has no row, or update on conflict": """
        INSERT INTO cmis.platform_connections AS c (org_id, platform, account_id, access_token)
        SELECT %(org_id)s::uuid, %(platform)s::text, %(account_id)s::text, %(access_token)s::text
         WHERE EXISTS (SELECT FROM cmis.orgs AS o WHERE o.org_id = %(org_id)s::uuid)
           AND NOT EXISTS (SELECT FROM cmis.platform_connections AS e
                            WHERE e.org_id = %(org_id)s::uuid AND e.platform = %(platform)s::text
                              AND e.account_id = %(account_id)s::text)
        ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL
        DO UPDATE SET access_token = COALESCE(%(access_token)s::text, c.access_token),
                      updated_at = clock_timestamp()
        RETURNING c.*""",
    "soft_delete / restore: the org's row by id": """
        SELECT c.platform, c.account_id FROM cmis.platform_connections AS c
         WHERE c.connection_id = %(connection_id)s::uuid AND c.org_id = %(org_id)s::uuid
           AND c.deleted_at IS NULL""",
    "soft_delete: set deleted_at": """
        UPDATE cmis.platform_connections AS c
           SET deleted_at = clock_timestamp(), updated_at = clock_timestamp()
         WHERE c.connection_id = %(connection_id)s::uuid AND c.org_id = %(org_id)s::uuid
           AND c.deleted_at IS NULL
        RETURNING c.*""",
    "purge: the org's rows deleted long ago": """
        DELETE FROM cmis.platform_connections AS c
         WHERE c.org_id = %(org_id)s::uuid
           AND c.deleted_at < clock_timestamp() - interval '30 days'""",
    "restore: another live row of the key": """
        SELECT EXISTS (
            SELECT FROM cmis.platform_connections AS c
             WHERE c.org_id = %(org_id)s::uuid AND c.platform = %(platform)s::text
               AND c.account_id = %(account_id)s::text AND c.deleted_at IS NULL
               AND c.connection_id <> %(connection_id)s::uuid)""",
}

REPOSITORY_QUERIES = [
    pytest.param("get", {"include_deleted": False}, id="get"),
    pytest.param("get", {"include_deleted": True}, id="get-include-deleted"),
    pytest.param("list", {"platform": None, "include_deleted": False}, id="list"),
    pytest.param("list", {"platform": None, "include_deleted": True}, id="list-include-deleted"),
    pytest.param("list", {"platform": "meta", "include_deleted": False}, id="list-platform"),
    pytest.param(
        "list", {"platform": "meta", "include_deleted": True}, id="list-platform-include-deleted"
    ),
]

PLAN_CACHE_MODES = [
    pytest.param("force_custom_plan", id="custom-plan"),
    pytest.param("force_generic_plan", id="generic-plan"),
]


def _params(conn: psycopg.Connection[Any], target: Key) -> dict[str, Any]:
    row = conn.execute(
        "SELECT connection_id FROM cmis.platform_connections"
        " WHERE org_id = %s AND platform = %s AND account_id = %s"
        " ORDER BY deleted_at DESC NULLS FIRST LIMIT 1",
        (target.org_id, target.platform, target.account_id),
    ).fetchone()
    assert row is not None
    return {
        "org_id": target.org_id,
        "platform": target.platform,
        "account_id": target.account_id,
        "connection_id": row[0],
        "access_token": "new-access",
    }


@pytest.mark.parametrize("plan_cache_mode", PLAN_CACHE_MODES)
@pytest.mark.parametrize(
    "target",
    [
        pytest.param(LIVE_WITH_HISTORY, id="live-key-with-history"),
        pytest.param(DELETED_ONLY, id="deleted-only-key"),
    ],
)
@pytest.mark.parametrize("statement", list(FUNCTION_STATEMENTS), ids=list(FUNCTION_STATEMENTS))
def test_function_statement_uses_an_index(
    plans_conn, table_indexes, statement, target, plan_cache_mode
):
    text = FUNCTION_STATEMENTS[statement]
    plan = explain(plans_conn, text, _params(plans_conn, target), plan_cache_mode)
    check_plan(plan, table_indexes, f"{statement} ({plan_cache_mode})")
    if "ON CONFLICT" in text:
        assert plan["Conflict Arbiter Indexes"] == ["idx_platform_connections_unique"]


def test_newest_deleted_row_lookup_reads_the_lookup_index_backwards(plans_conn, table_indexes):
    plan = explain(
        plans_conn,
        FUNCTION_STATEMENTS["upsert: newest deleted row of the key"],
        _params(plans_conn, LIVE_WITH_HISTORY),
        "force_generic_plan",
    )
    scans = [node for node in plan_nodes(plan) if node.get("Relation Name") == TABLE]
    assert [
        (node["Node Type"], node.get("Index Name"), node.get("Scan Direction")) for node in scans
    ] == [("Index Scan", "idx_platform_connections_lookup", "Backward")], describe(plan)


@pytest.mark.parametrize("plan_cache_mode", PLAN_CACHE_MODES)
@pytest.mark.parametrize(("name", "extra"), REPOSITORY_QUERIES)
def test_repository_query_uses_an_index(plans_conn, table_indexes, name, extra, plan_cache_mode):
    params = {**_params(plans_conn, LIVE_WITH_HISTORY), **extra}
    plan = explain(plans_conn, query(name), params, plan_cache_mode)
    check_plan(plan, table_indexes, f"queries.sql {name} {extra} ({plan_cache_mode})")
    assert any(node.get("Relation Name") == TABLE for node in plan_nodes(plan)), describe(plan)


# --- (b) plans of the statements run inside the functions, via auto_explain ---

AUTO_EXPLAIN_SETTINGS = [
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_analyze = off",
    "SET auto_explain.log_format = 'json'",
    "SET auto_explain.log_level = 'notice'",
    "SET client_min_messages = 'notice'",
]


@dataclass(frozen=True)
class LoggedPlan:
    query_text: str
    plan: dict[str, Any]


def _collect_plans(notices: list[str]) -> list[LoggedPlan]:
    plans = []
    for message in notices:
        if "plan:" not in message:
            continue
        logged = json.loads(message.split("plan:", 1)[1])
        plans.append(LoggedPlan(logged["Query Text"], logged["Plan"]))
    return plans


def test_statements_inside_the_functions_use_indexes(plans_conn, table_indexes):
    notices: list[str] = []
    plans_conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    for setting in AUTO_EXPLAIN_SETTINGS:
        plans_conn.execute(setting)

    # Seven calls of each kind: PL/pgSQL plans the first five times with the
    # values, and may switch to a generic plan from then on. Both are checked.
    outcomes = []
    upsert = (
        "SELECT outcome FROM cmis.upsert_platform_connection(%s, %s, %s, p_access_token => 'x')"
    )
    for n in range(7):
        for target in (key(2000 + 37 * n), key(100 + 37 * n)):  # a live key, a deleted-only key
            outcomes.append(
                plans_conn.execute(
                    upsert, (target.org_id, target.platform, target.account_id)
                ).fetchone()
            )
        new = key(200_000 + n)
        outcomes.append(
            plans_conn.execute(upsert, (new.org_id, new.platform, new.account_id)).fetchone()
        )
    assert sorted({o[0] for o in outcomes if o}) == ["created", "restored", "updated"]

    deleted_ids = []
    for n in range(7):
        target = key(30_000 + 41 * n)
        params = _params(plans_conn, target)
        rows = plans_conn.execute(
            "SELECT connection_id FROM cmis.soft_delete_platform_connection(%s, %s)",
            (target.org_id, params["connection_id"]),
        ).fetchall()
        assert rows, target
        deleted_ids.append((target.org_id, params["connection_id"]))
    for org, connection_id in deleted_ids:
        assert plans_conn.execute(
            "SELECT connection_id FROM cmis.restore_platform_connection(%s, %s)",
            (org, connection_id),
        ).fetchall()

    for n in range(7):
        plans_conn.execute(
            "SELECT cmis.purge_platform_connections(%s, interval '3650 days')",
            (key(50_000 + n).org_id,),
        )

    # The bulk call, seven times over a mix of live, deleted-only and new keys
    # of one org (ORGS apart, key numbers share an org).
    for n in range(7):
        base = 3 * ORGS * n
        batch = [key(60_000 + base + ORGS * j) for j in range(40)] + [key(500_000 + base)]
        org = batch[0].org_id
        assert all(k.org_id == org for k in batch)
        elements = [{"platform": k.platform, "account_id": k.account_id} for k in batch]
        bulk_outcomes = plans_conn.execute(
            "SELECT DISTINCT outcome FROM cmis.upsert_platform_connections(%s, %s)",
            (org, Jsonb(elements)),
        ).fetchall()
        assert bulk_outcomes

    plans = _collect_plans(notices)
    nested = [
        p
        for p in plans
        if "cmis.platform_connections" in p.query_text
        and "upsert_platform_connection(" not in p.query_text
        and "soft_delete_platform_connection(" not in p.query_text
        and "restore_platform_connection(" not in p.query_text
        and "purge_platform_connections(" not in p.query_text
        and "upsert_platform_connections(" not in p.query_text
    ]
    assert nested, "auto_explain logged no nested statement: " + "\n".join(notices[:5])

    # Each kind of statement inside the functions was captured, at least seven times.
    kinds = {
        "upsert update": r"UPDATE cmis\.platform_connections AS c\s+SET account_name",
        "upsert newest deleted row": r"LIMIT 1\s+FOR UPDATE SKIP LOCKED",
        "upsert undelete": r"SET deleted_at = NULL,\s+account_name = COALESCE\(p_account_name",
        "upsert insert": r"INSERT INTO cmis\.platform_connections",
        "soft_delete/restore select": r"SELECT c\.platform, c\.account_id\s+FROM",
        "soft_delete update": r"SET deleted_at = v_now",
        "restore live check": r"c\.connection_id <> p_connection_id",
        "restore update": r"SET deleted_at = NULL, updated_at = clock_timestamp\(\)",
        "purge delete": r"DELETE FROM cmis\.platform_connections",
        "bulk update live rows": (
            r"WHERE v_state\[k\.ordinality\] = 0\s+\)\s+UPDATE cmis\.platform_connections"
        ),
        "bulk undelete": r"\), chosen AS \(",
        "bulk insert": r"WITH written AS \(\s+INSERT INTO",
    }
    for kind, pattern in kinds.items():
        seen = [p for p in nested if re.search(pattern, p.query_text)]
        assert len(seen) >= 7, f"{kind}: {len(seen)} plans captured"

    for logged in nested:
        check_plan(logged.plan, table_indexes, logged.query_text.strip())
        if "ON CONFLICT" in logged.query_text:
            # The INSERT's node: at the top, or inside a CTE (the bulk call).
            arbiters = [
                n["Conflict Arbiter Indexes"]
                for n in plan_nodes(logged.plan)
                if "Conflict Arbiter Indexes" in n
            ]
            assert arbiters == [["idx_platform_connections_unique"]], describe(logged.plan)
