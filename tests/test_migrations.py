"""The migrations of sql/migrations/, run against real PostgreSQL databases.

What is proven here, each test saying which part:

- an empty database gets the target schema from ``yoyo apply`` run as users run it;
- each historical shape the Laravel app left behind (legacy_a, legacy_b, and a
  hand-fixed one) is adopted with every row kept, timestamps read as UTC, row
  level security untouched, and ends with exactly the schema a fresh install has;
- a row that cannot fit the target stops the migration with a message naming it,
  and nothing changes;
- every migration rolls back, back to the exact shape it started from, and
  refuses to roll back rather than lose data;
- the functions in the database are exactly the files of sql/procedures/, and
  the migrate command ships an edited file without a new migration;
- applying over objects that already exist works.

Every test database (the ``database`` fixture) defaults its sessions to the
time zone Asia/Kathmandu (UTC+05:45), so that a conversion of `timestamp` values
that used the session's time zone instead of UTC would show.
"""

from __future__ import annotations

import datetime as dt
import difflib
import pprint
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from pytest_postgresql.janitor import DatabaseJanitor

from cmis_repo import migrate as migrate_module
from cmis_repo.migrate import migrate
from cmis_repo.procedures import function_names, install_procedures

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
YOYO = Path(sys.executable).parent / "yoyo"

MIGRATIONS = [
    "0001_create_schema",
    "0002_adopt_platform_connections",
    "0003_install_procedures",
    "0004_tenant_isolation",
]
FUNCTIONS = [
    "assert_platform_connection_org_scope",
    "lock_platform_connection_key",
    "purge_platform_connections",
    "restore_platform_connection",
    "soft_delete_platform_connection",
    "upsert_platform_connection",
    "upsert_platform_connections",
]
LEGACY_TIME_ZONE = "Asia/Kathmandu"
UTC = dt.UTC

Conn = psycopg.Connection[Any]


# ---------------------------------------------------------------------------
# Databases and yoyo
# ---------------------------------------------------------------------------


@dataclass
class Database:
    """One test database: its conninfo, its yoyo URL, and the yoyo command line."""

    conninfo: str
    url: str

    @classmethod
    def on(cls, server: dict[str, Any], dbname: str) -> Database:
        auth = quote(server["user"], safe="")
        if server.get("password"):
            auth += ":" + quote(server["password"], safe="")
        url = f"postgresql+psycopg://{auth}@{server['host']}:{server['port']}/{dbname}"
        params = {k: v for k, v in server.items() if v is not None}
        return cls(make_conninfo(dbname=dbname, **params), url)

    def connect(self) -> Conn:
        """An autocommit connection returning dict rows; close it (use ``with``)."""
        return psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row)

    def run(self, sql_text: str) -> None:
        """Run one or more statements and commit."""
        with self.connect() as conn:
            conn.execute(sql_text)

    def yoyo(self, command: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """``yoyo COMMAND --batch --database URL ARGS`` from the project root, with its yoyo.ini."""
        result = subprocess.run(
            [str(YOYO), command, "--batch", "--database", self.url, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok and result.returncode != 0:
            pytest.fail(f"yoyo {command} {' '.join(args)} failed:\n{result.stderr}")
        if not ok and result.returncode == 0:
            pytest.fail(f"yoyo {command} {' '.join(args)} succeeded but should have failed")
        return result


@pytest.fixture
def database(blank_database: str, server: dict[str, Any]) -> Database:
    """A new, empty database whose sessions default to a non-UTC time zone."""
    dbname = conninfo_to_dict(blank_database)["dbname"]
    database = Database.on(server, str(dbname))
    database.run(
        f"ALTER DATABASE {sql.Identifier(str(dbname)).as_string()} "
        f"SET timezone TO '{LEGACY_TIME_ZONE}'"
    )
    return database


@pytest.fixture(scope="module")
def fresh_schema(pg_server: Any) -> dict[str, Any]:
    """The schema snapshot of an empty database after ``yoyo apply``: the target."""
    server = {
        "host": pg_server.host,
        "port": pg_server.port,
        "user": pg_server.user,
        "password": pg_server.password or None,
    }
    dbname = f"cmis_fresh_{uuid.uuid4().hex[:12]}"
    with DatabaseJanitor(dbname=dbname, **server):
        database = Database.on(server, dbname)
        database.yoyo("apply")
        with database.connect() as conn:
            return schema_snapshot(conn)


def one(conn: Conn, query: Any, params: Any = None) -> dict[str, Any]:
    """The one row ``query`` returns, as a dict."""
    row = conn.cursor(row_factory=dict_row).execute(query, params).fetchone()
    assert row is not None, query
    return row


def applied_migrations(conn: Conn) -> list[str]:
    """The migration ids yoyo has recorded as applied."""
    if one(conn, "SELECT to_regclass('public._yoyo_migration') AS t")["t"] is None:
        return []
    rows = conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")
    return [row["migration_id"] for row in rows]


# ---------------------------------------------------------------------------
# Catalog snapshots
# ---------------------------------------------------------------------------

_COLUMNS = """
SELECT c.relname AS table_name, a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS "default", a.attidentity AS identity
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
 ORDER BY c.relname, a.attnum
"""
_RELATIONS = """
SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s
"""
_INDEXES = """
SELECT ic.relname AS name, pg_get_indexdef(i.indexrelid) AS def
  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = ic.relnamespace
 WHERE n.nspname = %(schema)s
"""
_CONSTRAINTS = """
SELECT con.conrelid::regclass::text AS table_name, con.conname AS name, con.contype AS type,
       pg_get_constraintdef(con.oid) AS def
  FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
 WHERE n.nspname = %(schema)s
"""
_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition,
       obj_description(p.oid, 'pg_proc') AS comment
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = %(schema)s
"""
_ROW_SECURITY = """
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
"""
_POLICIES = """
SELECT tablename || '.' || policyname AS name, permissive, roles::text[] AS roles, cmd, qual,
       with_check
  FROM pg_policies WHERE schemaname = %(schema)s
"""

# Effective privileges: a NULL ACL (the defaults) reads as the defaults it
# stands for, since a GRANT followed by its REVOKE leaves them written out.
_PRIVILEGES = """
SELECT 'schema ' || n.nspname AS object, a.grantee::regrole::text AS grantee,
       a.privilege_type AS privilege
  FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
 WHERE n.nspname = %(schema)s
UNION ALL
SELECT c.oid::regclass::text, a.grantee::regrole::text, a.privilege_type
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE c.relnamespace::regnamespace::text = %(schema)s
UNION ALL
SELECT att.attrelid::regclass::text || '.' || att.attname, a.grantee::regrole::text,
       a.privilege_type
  FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid, aclexplode(att.attacl) a
 WHERE c.relnamespace::regnamespace::text = %(schema)s
UNION ALL
SELECT p.oid::regprocedure::text, a.grantee::regrole::text, a.privilege_type
  FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE p.pronamespace::regnamespace::text = %(schema)s
"""


def schema_snapshot(conn: Conn, schema: str = "cmis") -> dict[str, Any]:
    """Columns, relations, indexes, constraints and functions of ``schema``, comparable.

    Leaves out row-level security (the app's business) and every table's rows.
    """
    args = {"schema": schema}
    cur = conn.cursor(row_factory=dict_row)
    return {
        "columns": {
            f"{r['table_name']}.{r['column_name']}": {
                "type": r["type"],
                "not_null": r["not_null"],
                "default": r["default"],
                "identity": r["identity"],
            }
            for r in cur.execute(_COLUMNS, args)
        },
        "relations": {r["relname"]: r["relkind"] for r in cur.execute(_RELATIONS, args)},
        "indexes": {r["name"]: r["def"] for r in cur.execute(_INDEXES, args)},
        "constraints": {
            f"{r['table_name']} {r['name']}": r["def"] for r in cur.execute(_CONSTRAINTS, args)
        },
        "functions": {
            r["signature"]: {"definition": r["definition"], "comment": r["comment"]}
            for r in cur.execute(_FUNCTIONS, args)
        },
    }


def _canonical_check_defs(conn: Conn, schema: str) -> dict[str, str]:
    """Each CHECK constraint's definition after PostgreSQL re-reads it once.

    A rollback can only re-create a CHECK from pg_get_constraintdef's text, and
    re-reading ``status IN (...)`` renders its casts differently; reading both
    sides once more makes equal constraints compare equal (the second reading
    is stable). Done in a transaction that is rolled back.
    """
    cur = conn.cursor(row_factory=dict_row)
    checks = cur.execute(
        "SELECT con.conrelid::regclass::text AS table_name, con.conname AS name,"
        "       pg_get_constraintdef(con.oid) AS def"
        "  FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace"
        " WHERE n.nspname = %s AND con.contype = 'c' ORDER BY 1, 2",
        (schema,),
    ).fetchall()
    canonical: dict[str, str] = {}
    with conn.transaction(force_rollback=True):
        for check in checks:
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {table} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} {d}"
                ).format(
                    table=sql.SQL(check["table_name"]),
                    name=sql.Identifier(check["name"]),
                    d=sql.SQL(check["def"]),
                )
            )
        for check in checks:
            canonical[f"{check['table_name']} {check['name']}"] = one(
                conn,
                "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint"
                " WHERE conrelid = %s::regclass AND conname = %s",
                (check["table_name"], check["name"]),
            )["def"]
    return canonical


def full_snapshot(conn: Conn, schema: str = "cmis") -> dict[str, Any]:
    """Everything of ``schema`` a rollback must give back exactly.

    The schema snapshot plus column order, row-level security flags, policies
    and every table's rows (the bookkeeping table's too); CHECK definitions in
    their canonical reading (see _canonical_check_defs).
    """
    args = {"schema": schema}
    cur = conn.cursor(row_factory=dict_row)
    snapshot = schema_snapshot(conn, schema)
    snapshot["constraints"].update(_canonical_check_defs(conn, schema))
    snapshot["column_order"] = [
        f"{r['table_name']}.{r['column_name']}" for r in cur.execute(_COLUMNS, args)
    ]
    snapshot["row_security"] = {
        r["relname"]: (r["relrowsecurity"], r["relforcerowsecurity"])
        for r in cur.execute(_ROW_SECURITY, args)
    }
    snapshot["policies"] = {r["name"]: dict(r) for r in cur.execute(_POLICIES, args)}
    snapshot["privileges"] = sorted(
        (r["object"], r["grantee"], r["privilege"]) for r in cur.execute(_PRIVILEGES, args)
    )
    snapshot["rows"] = table_rows(conn, schema)
    return snapshot


def row_security(conn: Conn) -> dict[str, Any]:
    """RLS flags and policies of the app's tables in schema cmis (not our bookkeeping table)."""
    args = {"schema": "cmis"}
    cur = conn.cursor(row_factory=dict_row)
    return {
        "row_security": {
            r["relname"]: (r["relrowsecurity"], r["relforcerowsecurity"])
            for r in cur.execute(_ROW_SECURITY, args)
            if r["relname"] != "cmis_repo_undo"
        },
        "policies": {r["name"]: dict(r) for r in cur.execute(_POLICIES, args)},
    }


#: The org policy's expression as pg_policies renders it.
ORG_CHECK = "(org_id = (NULLIF(current_setting('app.current_org_id'::text, true), ''::text))::uuid)"


def with_org_check(security: dict[str, Any]) -> dict[str, Any]:
    """``row_security()`` as 0004 leaves it: the app's org policy keeps its name
    and USING, and gets WITH CHECK equal to its USING when it had none."""
    policies = {
        name: {**policy, "with_check": policy["with_check"] or policy["qual"]}
        if policy["qual"] == ORG_CHECK and policy["cmd"] == "ALL"
        else policy
        for name, policy in security["policies"].items()
    }
    return {**security, "policies": policies}


def table_rows(conn: Conn, schema: str = "cmis") -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of ``schema``, ordered by its first column."""
    cur = conn.cursor(row_factory=dict_row)
    tables = [
        r["relname"]
        for r in cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
            (schema,),
        )
    ]
    return {
        table: cur.execute(
            sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(schema, table))
        ).fetchall()
        for table in tables
    }


def assert_same(actual: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Fail with a unified diff of the two pretty-printed snapshots when they differ."""
    if actual == expected:
        return
    diff = difflib.unified_diff(
        pprint.pformat(expected, width=120).splitlines(),
        pprint.pformat(actual, width=120).splitlines(),
        fromfile="expected",
        tofile="actual",
        lineterm="",
    )
    pytest.fail(f"{what} differ:\n" + "\n".join(diff))


# ---------------------------------------------------------------------------
# Legacy shapes and their rows
# ---------------------------------------------------------------------------

ADD_DELETED_AT = "ALTER TABLE cmis.platform_connections ADD COLUMN deleted_at timestamp;"
HAND_FIX = """
ALTER TABLE cmis.platform_connections DROP CONSTRAINT uq_platform_connections;
CREATE UNIQUE INDEX {name} ON cmis.platform_connections (org_id, platform, account_id)
    WHERE deleted_at IS NULL;
"""


@dataclass(frozen=True)
class Shape:
    """A historical shape of the app's schema: a fixture file plus SQL run after it."""

    name: str
    fixture: str
    extra_sql: str = ""
    has_deleted_at: bool = True
    #: whether a key may hold soft-deleted rows beside its live one
    key_history: bool = False

    def load(self, database: Database) -> None:
        database.run((FIXTURES / self.fixture).read_text("utf-8") + self.extra_sql)


SHAPE_A = Shape("a_without_deleted_at", "legacy_a_constraint.sql", has_deleted_at=False)
SHAPE_A_DELETED_AT = Shape("a_with_deleted_at", "legacy_a_constraint.sql", ADD_DELETED_AT)
SHAPE_B = Shape("b_unique_index", "legacy_b_unique_index.sql")
SHAPE_C = Shape(
    "c_hand_fixed",
    "legacy_a_constraint.sql",
    ADD_DELETED_AT + HAND_FIX.format(name="idx_platform_connections_unique"),
    key_history=True,
)
SHAPE_C_OTHER_NAME = Shape(
    "c_hand_fixed_other_index_name",
    "legacy_a_constraint.sql",
    ADD_DELETED_AT + HAND_FIX.format(name="platform_connections_live_key"),
    key_history=True,
)
SHAPES = [SHAPE_A, SHAPE_A_DELETED_AT, SHAPE_B, SHAPE_C, SHAPE_C_OTHER_NAME]


def org(n: int) -> uuid.UUID:
    return uuid.UUID(int=0x0A0000 + n)


def conn_id(n: int) -> uuid.UUID:
    return uuid.UUID(int=0x0C0000 + n)


def ts(text: str) -> dt.datetime:
    """A naive timestamp, as the legacy `timestamp` columns hold."""
    return dt.datetime.fromisoformat(text)


ORGS = [(org(1), "Acme"), (org(2), "Globex"), (org(3), None)]


def legacy_rows(shape: Shape) -> list[dict[str, Any]]:
    """Rows for the legacy table: several orgs, live and soft-deleted, awkward timestamps.

    The timestamps sit in daylight-saving gaps and overlaps of common zones and
    on microsecond edges, so that any reading other than "this is UTC" shows.
    """
    rows: list[dict[str, Any]] = [
        {
            "connection_id": conn_id(1),
            "org_id": org(1),
            "platform": "meta",
            "account_id": "act_1",
            "account_name": "Acme Ads",
            "status": "active",
            "access_token": "tok-1",
            "refresh_token": "ref-1",
            "token_expires_at": ts("2024-03-31 02:30:00"),
            "scopes": '["ads_read", "ads_management"]',
            "account_metadata": '{"currency": "EUR", "tz": "Europe/Berlin"}',
            "last_sync_at": ts("2024-10-27 02:30:00.123456"),
            "auto_sync": True,
            "sync_frequency_minutes": 15,
            "created_at": ts("2023-01-01 00:00:00"),
            "updated_at": ts("2024-10-27 02:59:59.999999"),
        },
        {
            "connection_id": conn_id(2),
            "org_id": org(1),
            "platform": "google",
            "account_id": "123-456-7890",
            "account_name": "Acme Search",
            "status": "error",
            "last_error_at": ts("2024-11-03 01:30:00"),
            "last_error_message": "invalid_grant",
            "auto_sync": False,
            "sync_frequency_minutes": 60,
            "created_at": ts("2022-06-15 23:45:00"),
            "updated_at": ts("2024-11-03 01:30:00"),
        },
        {
            "connection_id": conn_id(3),
            "org_id": org(2),
            "platform": "meta",
            "account_id": "act_1",
            "account_name": "Globex on Meta",
            "status": "expired",
            "token_expires_at": ts("2024-01-01 00:00:00"),
            "scopes": "[]",
            "created_at": ts("2023-12-31 23:00:00"),
            "updated_at": ts("2023-12-31 23:00:00"),
        },
        {
            "connection_id": conn_id(4),
            "org_id": org(2),
            "platform": "tiktok",
            "account_id": "tt_9",
            "account_name": "Globex TikTok",
            "status": "revoked",
            "created_at": ts("2020-02-29 12:00:00"),
            "updated_at": ts("2024-02-29 12:00:00"),
            "deleted_at": ts("2024-02-29 12:00:00"),
        },
        {
            # No status: the legacy default ('active' for a, 'pending' for b).
            "connection_id": conn_id(5),
            "org_id": org(3),
            "platform": "linkedin",
            "account_id": "li_1",
            "account_name": "Initech",
            "created_at": ts("2021-05-05 05:05:05.5"),
            "updated_at": ts("2021-05-05 05:05:05.5"),
        },
        {
            "connection_id": conn_id(6),
            "org_id": org(3),
            "platform": "meta",
            "account_id": "act_3",
            "account_name": "Initech Meta",
            "status": "pending",
            "account_metadata": '{"nested": {"list": [1, 2, 3]}}',
            "created_at": ts("1999-12-31 23:59:59.999999"),
            "updated_at": ts("2000-01-01 00:00:00"),
            "deleted_at": ts("2024-06-01 08:00:00"),
        },
    ]
    if shape.key_history:
        # An older, soft-deleted row of connection 1's key.
        rows.append(
            {
                "connection_id": conn_id(7),
                "org_id": org(1),
                "platform": "meta",
                "account_id": "act_1",
                "account_name": "Acme Ads (old)",
                "status": "revoked",
                "created_at": ts("2022-01-01 00:00:00"),
                "updated_at": ts("2022-12-31 00:00:00"),
                "deleted_at": ts("2022-12-31 00:00:00"),
            }
        )
    if not shape.has_deleted_at:
        for row in rows:
            row.pop("deleted_at", None)
    return rows


def insert_connection(conn: Conn, row: dict[str, Any]) -> None:
    columns = list(row)
    conn.execute(
        sql.SQL("INSERT INTO cmis.platform_connections ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        ),
        [row[c] for c in columns],
    )


def load_legacy(database: Database, shape: Shape, extra_sql: str = "") -> None:
    """Load ``shape`` into the empty ``database`` with its orgs and rows, then ``extra_sql``."""
    shape.load(database)
    with database.connect() as conn, conn.transaction():
        conn.cursor().executemany("INSERT INTO cmis.orgs (org_id, name) VALUES (%s, %s)", ORGS)
        for row in legacy_rows(shape):
            insert_connection(conn, row)
        if extra_sql:
            conn.execute(extra_sql)


def as_adopted(row: dict[str, Any]) -> dict[str, Any]:
    """What a legacy row must read as after adoption: `timestamp` read as UTC, deleted_at added."""
    adopted = {
        key: value.replace(tzinfo=UTC)
        if isinstance(value, dt.datetime) and value.tzinfo is None
        else value
        for key, value in row.items()
    }
    adopted.setdefault("deleted_at", None)
    return adopted


def upsert(
    conn: Conn, org_id: uuid.UUID, platform: str, account_id: str, **kwargs: Any
) -> dict[str, Any]:
    """Call cmis.upsert_platform_connection with ``kwargs`` as named arguments."""
    named = sql.SQL("").join(
        sql.SQL(", {} => {}").format(sql.Identifier(k), sql.Placeholder()) for k in kwargs
    )
    return one(
        conn,
        sql.SQL(
            "SELECT outcome, connection_id, status, deleted_at"
            " FROM cmis.upsert_platform_connection(%s, %s, %s{})"
        ).format(named),
        [org_id, platform, account_id, *kwargs.values()],
    )


# ---------------------------------------------------------------------------
# 1. An empty database
# ---------------------------------------------------------------------------

TARGET_COLUMNS = {
    "connection_id": ("uuid", True, "gen_random_uuid()"),
    "org_id": ("uuid", True, None),
    "platform": ("character varying(50)", True, None),
    "account_id": ("character varying(255)", True, None),
    "account_name": ("character varying(255)", False, None),
    "status": ("character varying(30)", True, "'active'::character varying"),
    "access_token": ("text", False, None),
    "refresh_token": ("text", False, None),
    "token_expires_at": ("timestamp with time zone", False, None),
    "scopes": ("jsonb", False, None),
    "account_metadata": ("jsonb", False, None),
    "last_sync_at": ("timestamp with time zone", False, None),
    "last_error_at": ("timestamp with time zone", False, None),
    "last_error_message": ("text", False, None),
    "auto_sync": ("boolean", True, "true"),
    "sync_frequency_minutes": ("integer", True, "15"),
    "created_at": ("timestamp with time zone", True, "now()"),
    "updated_at": ("timestamp with time zone", True, "now()"),
    "deleted_at": ("timestamp with time zone", False, None),
}


def test_yoyo_apply_on_empty_database_installs_target_schema(database: Database) -> None:
    """`yoyo apply --batch` from the project root builds the tables, indexes,
    constraints and the functions of schema cmis on an empty database."""
    result = database.yoyo("apply")
    assert result.returncode == 0

    with database.connect() as conn:
        snapshot = schema_snapshot(conn)
        assert applied_migrations(conn) == MIGRATIONS

    columns = {
        key.removeprefix("platform_connections."): (c["type"], c["not_null"], c["default"])
        for key, c in snapshot["columns"].items()
        if key.startswith("platform_connections.")
    }
    assert columns == TARGET_COLUMNS
    assert snapshot["columns"]["orgs.org_id"]["type"] == "uuid"
    assert {name for name, kind in snapshot["relations"].items() if kind == "r"} == {
        "orgs",
        "platform_connections",
        "cmis_repo_undo",
    }
    assert snapshot["indexes"]["idx_platform_connections_unique"] == (
        "CREATE UNIQUE INDEX idx_platform_connections_unique ON cmis.platform_connections"
        " USING btree (org_id, platform, account_id) WHERE (deleted_at IS NULL)"
    )
    assert snapshot["indexes"]["idx_platform_connections_lookup"] == (
        "CREATE INDEX idx_platform_connections_lookup ON cmis.platform_connections"
        " USING btree (org_id, platform, account_id, deleted_at)"
    )
    constraints = snapshot["constraints"]
    assert constraints["cmis.platform_connections platform_connections_pkey"] == (
        "PRIMARY KEY (connection_id)"
    )
    assert constraints["cmis.platform_connections platform_connections_org_id_fkey"] == (
        "FOREIGN KEY (org_id) REFERENCES cmis.orgs(org_id) ON DELETE CASCADE"
    )
    assert constraints[
        "cmis.platform_connections platform_connections_sync_frequency_minutes_check"
    ] == ("CHECK ((sync_frequency_minutes > 0))")
    status_check = constraints["cmis.platform_connections platform_connections_status_check"]
    for status in ("pending", "active", "warning", "expired", "revoked", "error"):
        assert f"'{status}'" in status_check
    # No other unique constraint or index on the key: only the partial one.
    assert not [c for c in constraints.values() if c.startswith("UNIQUE")]
    assert sorted(sig.split("(")[0] for sig in snapshot["functions"]) == [
        f"cmis.{name}" for name in FUNCTIONS
    ]


def test_fresh_schema_allows_history_but_one_live_row_per_key(database: Database) -> None:
    """On a fresh install the partial unique index lets a key keep soft-deleted
    rows beside its live one, and still refuses a second live row."""
    database.yoyo("apply")
    with database.connect() as conn:
        conn.execute("INSERT INTO cmis.orgs VALUES (%s, 'Acme')", [org(1)])
        for n, deleted in ((1, "2024-01-01"), (2, "2024-02-01"), (3, None)):
            conn.execute(
                "INSERT INTO cmis.platform_connections"
                " (connection_id, org_id, platform, account_id, deleted_at)"
                " VALUES (%s, %s, 'meta', 'act_1', %s)",
                [conn_id(n), org(1), deleted],
            )
        with pytest.raises(psycopg.errors.UniqueViolation, match="idx_platform_connections_unique"):
            conn.execute(
                "INSERT INTO cmis.platform_connections (org_id, platform, account_id)"
                " VALUES (%s, 'meta', 'act_1')",
                [org(1)],
            )


# ---------------------------------------------------------------------------
# 2 and 5. Adopting each historical shape
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_adopting_legacy_shape_keeps_rows_and_reaches_fresh_schema(
    database: Database, shape: Shape, fresh_schema: dict[str, Any]
) -> None:
    """A legacy database with rows, after `yoyo apply`: every row is kept with its
    `timestamp` values read as UTC, row-level security and policies are as they
    were except that the app's org policy now says its WITH CHECK, the schema of
    cmis equals a fresh install's, and a soft-deleted key reconnects as
    'restored' and 'warning' can be written."""
    load_legacy(database, shape)
    with database.connect() as conn:
        before_rows = table_rows(conn)
        before_security = row_security(conn)
    assert len(before_rows["platform_connections"]) == len(legacy_rows(shape))

    database.yoyo("apply")

    with database.connect() as conn:
        assert applied_migrations(conn) == MIGRATIONS
        after_rows = table_rows(conn)
        assert after_rows["orgs"] == before_rows["orgs"]
        assert after_rows["platform_connections"] == [
            as_adopted(row) for row in before_rows["platform_connections"]
        ]
        # The same, said in SQL for one value: old AT TIME ZONE 'UTC' = new.
        assert one(
            conn,
            "SELECT created_at = '2023-01-01 00:00:00'::timestamp AT TIME ZONE 'UTC' AS same"
            " FROM cmis.platform_connections WHERE connection_id = %s",
            [conn_id(1)],
        )["same"]

        assert_same(schema_snapshot(conn), fresh_schema, "adopted and fresh schemas")
        assert_same(row_security(conn), with_org_check(before_security), "row-level security")

        # The reconnect bug is gone: disconnect, then reconnect the same account.
        deleted = one(
            conn,
            "SELECT deleted_at FROM cmis.soft_delete_platform_connection(%s, %s)",
            [org(1), conn_id(2)],
        )
        assert deleted["deleted_at"] is not None
        again = upsert(conn, org(1), "google", "123-456-7890", p_access_token="tok-new")
        assert (again["outcome"], again["connection_id"]) == ("restored", conn_id(2))
        assert again["deleted_at"] is None
        if shape.has_deleted_at:
            # A row the legacy app had soft-deleted comes back too.
            legacy_deleted = upsert(conn, org(2), "tiktok", "tt_9")
            assert (legacy_deleted["outcome"], legacy_deleted["connection_id"]) == (
                "restored",
                conn_id(4),
            )
        if shape.key_history:
            conn.execute(
                "SELECT cmis.soft_delete_platform_connection(%s, %s)", [org(1), conn_id(1)]
            )
            newest = upsert(conn, org(1), "meta", "act_1")
            assert (newest["outcome"], newest["connection_id"]) == ("restored", conn_id(1))

        # 'warning', which the old CHECK lacked, can be written.
        warned = upsert(conn, org(3), "linkedin", "li_1", p_status="warning")
        assert (warned["outcome"], warned["status"]) == ("updated", "warning")
        conn.execute(
            "UPDATE cmis.platform_connections SET status = 'warning' WHERE connection_id = %s",
            [conn_id(3)],
        )


def test_hand_fixed_index_under_another_name_is_renamed_not_duplicated(
    database: Database,
) -> None:
    """A hand-made partial unique index under another name becomes
    idx_platform_connections_unique, and no second unique index on the key is made."""
    load_legacy(database, SHAPE_C_OTHER_NAME)
    database.yoyo("apply")
    with database.connect() as conn:
        unique = conn.execute(
            "SELECT indexrelid::regclass::text AS name, pg_get_expr(indpred, indrelid) AS pred"
            "  FROM pg_index WHERE indrelid = 'cmis.platform_connections'::regclass"
            "   AND indisunique AND NOT indisprimary"
        ).fetchall()
        undo = [r["undo_sql"] for r in conn.execute("SELECT undo_sql FROM cmis.cmis_repo_undo")]
    assert unique == [
        {"name": "cmis.idx_platform_connections_unique", "pred": "(deleted_at IS NULL)"}
    ]
    # Renamed, not re-created: the rollback renames it back.
    assert (
        "ALTER INDEX cmis.idx_platform_connections_unique RENAME TO platform_connections_live_key"
        in undo
    )
    assert "DROP INDEX cmis.idx_platform_connections_unique" not in undo


SECOND_PARTIAL_INDEX = (
    "CREATE UNIQUE INDEX pc_live ON cmis.platform_connections"
    " (org_id, platform, account_id) WHERE deleted_at IS NULL;"
)


@pytest.mark.parametrize(
    "shape",
    [SHAPE_B, SHAPE_C],
    ids=["full_index_with_our_name", "partial_index_with_our_name"],
)
def test_a_second_partial_unique_index_leaves_exactly_one(
    database: Database, shape: Shape, fresh_schema: dict[str, Any]
) -> None:
    """A hand-made partial unique index (pc_live) sits beside the shape's unique
    index named idx_platform_connections_unique, full (b) or already partial
    (hand-fixed). Adopted, exactly one unique index on the key is left, under
    our name (the schema is a fresh install's); the rollback gives back both."""
    load_legacy(database, shape, SECOND_PARTIAL_INDEX)
    with database.connect() as conn:
        before = full_snapshot(conn)
    database.yoyo("apply")
    with database.connect() as conn:
        assert_same(schema_snapshot(conn), fresh_schema, "adopted and fresh schemas")
    database.yoyo("rollback", "--all")
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "legacy state before and after rollback")


# ---------------------------------------------------------------------------
# 3. Rows that cannot fit stop the migration, and nothing changes
# ---------------------------------------------------------------------------

BAD_1 = uuid.UUID(int=0x0BAD01)
BAD_2 = uuid.UUID(int=0x0BAD02)
BAD_3 = uuid.UUID(int=0x0BAD03)


@dataclass(frozen=True)
class Misfit:
    """A legacy database holding rows the target schema cannot take."""

    name: str
    shape: Shape
    extra_sql: str
    problem: str
    named: list[uuid.UUID]
    not_named: list[uuid.UUID] = field(default_factory=list)


def _row_sql(n: uuid.UUID, **values: str) -> str:
    row = {
        "connection_id": f"'{n}'",
        "org_id": f"'{org(1)}'",
        "platform": "'meta'",
        "account_id": f"'bad_{n.int & 0xFF}'",
        "account_name": "'bad'",
        **values,
    }
    return (
        f"INSERT INTO cmis.platform_connections ({', '.join(row)})"
        f" VALUES ({', '.join(row.values())});"
    )


MISFITS = [
    Misfit(
        "status_outside_the_list",
        SHAPE_B,
        _row_sql(BAD_1, status="'paused'"),
        "status is not one of pending, active, warning, expired, revoked, error",
        [BAD_1],
    ),
    Misfit(
        "null_created_at",
        SHAPE_A,
        "ALTER TABLE cmis.platform_connections ALTER COLUMN created_at DROP NOT NULL;"
        + _row_sql(BAD_1, created_at="NULL"),
        "created_at is NULL",
        [BAD_1],
    ),
    Misfit(
        "org_missing_without_foreign_key",
        SHAPE_A_DELETED_AT,
        "ALTER TABLE cmis.platform_connections DROP CONSTRAINT platform_connections_org_id_fkey;"
        + _row_sql(BAD_1, org_id=f"'{uuid.UUID(int=0xDEAD)}'"),
        "org_id is not in cmis.orgs",
        [BAD_1],
    ),
    Misfit(
        "two_live_rows_for_a_key",
        SHAPE_A_DELETED_AT,
        "ALTER TABLE cmis.platform_connections DROP CONSTRAINT uq_platform_connections;"
        + _row_sql(BAD_1, account_id="'act_1'")
        # A soft-deleted row of the same key is history, not a problem.
        + _row_sql(BAD_2, account_id="'act_1'", deleted_at="'2024-01-01'"),
        "another live row has the same (org_id, platform, account_id)",
        [conn_id(1), BAD_1],
        [BAD_2],
    ),
    Misfit(
        "two_rows_for_a_key_before_deleted_at_existed",
        SHAPE_A,
        "ALTER TABLE cmis.platform_connections DROP CONSTRAINT uq_platform_connections;"
        + _row_sql(BAD_1, account_id="'act_1'"),
        "another live row has the same (org_id, platform, account_id)",
        [conn_id(1), BAD_1],
    ),
    Misfit(
        "two_live_rows_under_a_full_unique_index_gone",
        SHAPE_B,
        "DROP INDEX cmis.idx_platform_connections_unique;"
        + _row_sql(BAD_1, platform="'google'", account_id="'123-456-7890'")
        + _row_sql(BAD_3, status="'paused'"),
        "another live row has the same (org_id, platform, account_id)",
        [conn_id(2), BAD_1, BAD_3],
    ),
]


@pytest.mark.parametrize("misfit", MISFITS, ids=lambda m: m.name)
def test_row_that_cannot_fit_stops_migration_and_changes_nothing(
    database: Database, misfit: Misfit
) -> None:
    """`yoyo apply` (and then the migrate command) fails with a message naming
    the offending connection_id(s) and the problem; the schema, the policies
    and every row are as before, and 0002 is not recorded as applied."""
    load_legacy(database, misfit.shape, misfit.extra_sql)
    with database.connect() as conn:
        before = full_snapshot(conn)

    result = database.yoyo("apply", ok=False)
    assert misfit.problem in result.stderr
    for bad in misfit.named:
        assert str(bad) in result.stderr
    for fine in misfit.not_named:
        assert str(fine) not in result.stderr
    assert "nothing was changed" in result.stderr

    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        migrate(database.conninfo)
    assert misfit.problem in str(raised.value)
    for bad in misfit.named:
        assert str(bad) in str(raised.value)

    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "legacy state before and after the failure")
        assert applied_migrations(conn) == ["0001_create_schema"]


# ---------------------------------------------------------------------------
# 4. Rollbacks
# ---------------------------------------------------------------------------


def test_fresh_database_rolls_back_to_empty_and_applies_again(
    database: Database, fresh_schema: dict[str, Any]
) -> None:
    """On a fresh install `yoyo rollback --all` removes everything the
    migrations made (schema cmis included), and `yoyo apply` rebuilds the same schema."""
    database.yoyo("apply")
    database.yoyo("rollback", "--all")
    with database.connect() as conn:
        assert applied_migrations(conn) == []
        assert one(conn, "SELECT to_regnamespace('cmis') AS n")["n"] is None
    database.yoyo("apply")
    with database.connect() as conn:
        assert_same(schema_snapshot(conn), fresh_schema, "re-applied and fresh schemas")
        assert applied_migrations(conn) == MIGRATIONS


def test_migrate_command_rolls_back_and_applies_again(
    database: Database, fresh_schema: dict[str, Any]
) -> None:
    """cmis_repo.migrate's migrate() and rollback_all() do the same as yoyo's CLI,
    and a second migrate() applies nothing and changes nothing."""
    assert migrate(database.conninfo) == MIGRATIONS
    assert migrate(database.conninfo) == []
    with database.connect() as conn:
        assert_same(schema_snapshot(conn), fresh_schema, "migrated and fresh schemas")
    assert migrate_module.rollback_all(database.conninfo) == MIGRATIONS[::-1]
    with database.connect() as conn:
        assert one(conn, "SELECT to_regnamespace('cmis') AS n")["n"] is None
    assert migrate(database.conninfo) == MIGRATIONS
    with database.connect() as conn:
        assert_same(schema_snapshot(conn), fresh_schema, "re-migrated and fresh schemas")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_adopted_database_rolls_back_to_its_exact_legacy_shape(
    database: Database, shape: Shape, fresh_schema: dict[str, Any]
) -> None:
    """Adopt, `yoyo rollback --all`: the legacy schema (columns, order, types,
    defaults, indexes, constraints, RLS, policies) and every row are exactly as
    before, with no bookkeeping left; `yoyo apply` then adopts it again."""
    load_legacy(database, shape)
    with database.connect() as conn:
        before = full_snapshot(conn)

    database.yoyo("apply")
    database.yoyo("rollback", "--all")
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "legacy state before adoption and after rollback")
        assert applied_migrations(conn) == []

    database.yoyo("apply")
    with database.connect() as conn:
        assert_same(schema_snapshot(conn), fresh_schema, "re-adopted and fresh schemas")
        assert table_rows(conn)["platform_connections"] == [
            as_adopted(row) for row in before["rows"]["platform_connections"]
        ]


def test_rollback_of_0001_refuses_to_drop_tables_holding_rows(
    database: Database, fresh_schema: dict[str, Any]
) -> None:
    """On a fresh install whose tables hold rows, rolling back 0001 fails with a
    message naming the table, and changes nothing: tables, rows and bookkeeping
    stay, 0001 stays applied, and `yoyo apply` brings the rest back."""
    database.yoyo("apply")
    with database.connect() as conn:
        conn.execute("INSERT INTO cmis.orgs VALUES (%s, 'Acme')", [org(1)])
        assert upsert(conn, org(1), "meta", "act_1")["outcome"] == "created"
    # Roll back what depends on 0001 first, so that only 0001's rollback is tried next.
    database.yoyo("rollback", "--revision", "0002_adopt_platform_connections")
    with database.connect() as conn:
        before = full_snapshot(conn)
        assert applied_migrations(conn) == ["0001_create_schema"]

    result = database.yoyo("rollback", "--all", ok=False)
    assert "refusing to roll back 0001_create_schema: cmis.platform_connections holds rows" in (
        result.stderr
    )
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "state before and after the refused rollback")
        assert applied_migrations(conn) == ["0001_create_schema"]
        # Empty the connections: orgs still holds a row, so nothing is dropped at all.
        conn.execute("DELETE FROM cmis.platform_connections")
        before = full_snapshot(conn)

    result = database.yoyo("rollback", "--all", ok=False)
    assert "refusing to roll back 0001_create_schema: cmis.orgs holds rows" in result.stderr
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "state before and after the refused rollback")

    database.yoyo("apply")
    with database.connect() as conn:
        assert_same(schema_snapshot(conn), fresh_schema, "re-applied and fresh schemas")


def test_rollback_of_0002_refuses_to_drop_deleted_at_holding_values(database: Database) -> None:
    """Shape (a) had no deleted_at: once a row is soft-deleted, rolling back 0002
    fails naming the column, and changes nothing; with the row restored the
    rollback goes through and returns the exact legacy shape."""
    load_legacy(database, SHAPE_A)
    with database.connect() as conn:
        legacy = full_snapshot(conn)
    database.yoyo("apply")
    with database.connect() as conn:
        conn.execute("SELECT cmis.soft_delete_platform_connection(%s, %s)", [org(1), conn_id(2)])
    database.yoyo("rollback", "--revision", "0003_install_procedures")
    with database.connect() as conn:
        before = full_snapshot(conn)

    result = database.yoyo("rollback", "--revision", "0002_adopt_platform_connections", ok=False)
    assert (
        "refusing to drop cmis.platform_connections.deleted_at: rows hold values in it"
        in result.stderr
    )
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "state before and after the refused rollback")
        assert applied_migrations(conn) == MIGRATIONS[:2]
        # Restore the row as it was (soft_delete_platform_connection moved updated_at).
        conn.execute(
            "UPDATE cmis.platform_connections"
            "   SET deleted_at = NULL, updated_at = '2024-11-03 01:30:00+00'"
            " WHERE connection_id = %s",
            [conn_id(2)],
        )

    database.yoyo("rollback", "--all")
    with database.connect() as conn:
        after = full_snapshot(conn)
    assert_same(after, legacy, "legacy state before adoption and after rollback")


def test_rollback_of_0002_refuses_to_restore_full_unique_over_history(
    database: Database,
) -> None:
    """Shape (a) allowed one row per key: once a key holds a soft-deleted row and
    a new live one, rolling back 0002 fails naming both rows, and changes nothing."""
    load_legacy(database, SHAPE_A_DELETED_AT)
    database.yoyo("apply")
    with database.connect() as conn:
        conn.execute("SELECT cmis.soft_delete_platform_connection(%s, %s)", [org(1), conn_id(1)])
        # The app, not our functions, makes a new row for the same account.
        insert_connection(
            conn,
            {"connection_id": BAD_1, "org_id": org(1), "platform": "meta", "account_id": "act_1"},
        )
    database.yoyo("rollback", "--revision", "0003_install_procedures")
    with database.connect() as conn:
        before = full_snapshot(conn)

    result = database.yoyo("rollback", "--revision", "0002_adopt_platform_connections", ok=False)
    assert "refusing to re-create uq_platform_connections" in result.stderr
    assert str(conn_id(1)) in result.stderr
    assert str(BAD_1) in result.stderr
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "state before and after the refused rollback")
        assert applied_migrations(conn) == MIGRATIONS[:2]


# ---------------------------------------------------------------------------
# 6. Functions
# ---------------------------------------------------------------------------


def test_migrated_functions_are_exactly_the_procedure_files(db: Conn) -> None:
    """The functions of schema cmis in a migrated database (definition and
    comment) are exactly what running sql/procedures/ on a database without any
    function produces: nothing more, nothing less, nothing stale."""
    migrated = schema_snapshot(db)["functions"]
    assert sorted(sig.split("(")[0] for sig in migrated) == [f"cmis.{n}" for n in FUNCTIONS]
    assert sorted(function_names()) == FUNCTIONS

    with db.transaction(force_rollback=True):
        for signature in migrated:
            db.execute(sql.SQL("DROP FUNCTION {}").format(sql.SQL(signature)))
        assert schema_snapshot(db)["functions"] == {}
        install_procedures(db)
        from_files = schema_snapshot(db)["functions"]

    assert_same(from_files, migrated, "functions from the files and from the migrations")
    assert schema_snapshot(db)["functions"] == migrated


def test_migrate_installs_edited_procedure_without_new_migration(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every migration applied, an edited procedure file is not shipped by
    `yoyo apply` (its post-apply hook runs only when something was applied), but
    is by the migrate command: the edited text is in pg_proc afterwards."""
    database.yoyo("apply")
    tree = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", tree)
    edited = tree / "procedures" / "10_upsert_platform_connection.sql"
    marker = f"edited-{uuid.uuid4().hex}"
    original = edited.read_text("utf-8")
    # A comment at the top of the body, and the marker at the head of the COMMENT.
    text = original.replace("\nBEGIN\n", f"\nBEGIN\n    -- {marker}\n", 1)
    text = re.sub(r"(COMMENT ON FUNCTION [^;]*? IS\s*')", rf"\g<1>{marker}: ", text, count=1)
    assert text.count(marker) == 2
    edited.write_text(text, "utf-8")

    def upsert_function(conn: Conn) -> dict[str, Any]:
        return one(
            conn,
            "SELECT pg_get_functiondef(p.oid) AS definition,"
            "       obj_description(p.oid, 'pg_proc') AS comment"
            "  FROM pg_proc p WHERE p.oid = 'cmis.upsert_platform_connection'::regproc",
        )

    # yoyo alone, pointed at the edited tree: nothing to apply, so no hook.
    result = subprocess.run(
        [
            str(YOYO),
            "apply",
            "--batch",
            "--no-config-file",
            "--database",
            database.url,
            str(tree / "migrations"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with database.connect() as conn:
        assert marker not in upsert_function(conn)["definition"]

    monkeypatch.setattr(migrate_module, "sql_root", lambda: tree)
    assert migrate(database.conninfo) == []
    with database.connect() as conn:
        function = upsert_function(conn)
    assert f"    -- {marker}\n" in function["definition"]
    assert function["comment"].startswith(f"{marker}: ")
    # The real file was never touched.
    assert marker not in (ROOT / "sql" / "procedures" / edited.name).read_text("utf-8")


# ---------------------------------------------------------------------------
# 7. Applying over objects that already exist
# ---------------------------------------------------------------------------


def test_apply_when_orgs_exists_with_rows_but_no_connections_table(
    database: Database, fresh_schema: dict[str, Any]
) -> None:
    """cmis.orgs exists with rows, platform_connections does not: `yoyo apply`
    creates the rest and keeps the orgs; `yoyo rollback --all` drops only what it
    created, leaving the orgs as they were."""
    database.run("CREATE SCHEMA cmis; CREATE TABLE cmis.orgs (org_id uuid PRIMARY KEY, name text);")
    with database.connect() as conn:
        conn.cursor().executemany("INSERT INTO cmis.orgs VALUES (%s, %s)", ORGS)
        before = full_snapshot(conn)

    database.yoyo("apply")
    with database.connect() as conn:
        assert_same(schema_snapshot(conn), fresh_schema, "applied and fresh schemas")
        assert table_rows(conn)["orgs"] == before["rows"]["orgs"]
        assert upsert(conn, org(1), "meta", "act_1")["outcome"] == "created"
        conn.execute("DELETE FROM cmis.platform_connections")

    database.yoyo("rollback", "--all")
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "state before apply and after rollback")


def test_apply_when_target_indexes_and_checks_already_exist(
    database: Database, fresh_schema: dict[str, Any]
) -> None:
    """A table already in the target shape, with our partial unique index, our
    lookup index and our CHECK constraints: `yoyo apply` succeeds, keeps the
    rows, ends with a fresh install's schema, and rolls back to what was there."""
    database.run(
        """
        CREATE SCHEMA cmis;
        CREATE TABLE cmis.orgs (org_id uuid PRIMARY KEY, name text);
        CREATE TABLE cmis.platform_connections (
            connection_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            org_id uuid NOT NULL REFERENCES cmis.orgs (org_id) ON DELETE CASCADE,
            platform varchar(50) NOT NULL,
            account_id varchar(255) NOT NULL,
            account_name varchar(255),
            status varchar(30) NOT NULL DEFAULT 'active',
            access_token text,
            refresh_token text,
            token_expires_at timestamptz,
            scopes jsonb,
            account_metadata jsonb,
            last_sync_at timestamptz,
            last_error_at timestamptz,
            last_error_message text,
            auto_sync boolean NOT NULL DEFAULT true,
            sync_frequency_minutes integer NOT NULL DEFAULT 15,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz,
            CONSTRAINT platform_connections_status_check
                CHECK (status IN ('pending', 'active', 'warning', 'expired', 'revoked', 'error')),
            CONSTRAINT platform_connections_sync_frequency_minutes_check
                CHECK (sync_frequency_minutes > 0)
        );
        CREATE UNIQUE INDEX idx_platform_connections_unique
            ON cmis.platform_connections (org_id, platform, account_id) WHERE deleted_at IS NULL;
        CREATE INDEX idx_platform_connections_lookup
            ON cmis.platform_connections (org_id, platform, account_id, deleted_at);
        """
    )
    with database.connect() as conn:
        conn.cursor().executemany("INSERT INTO cmis.orgs VALUES (%s, %s)", ORGS)
        for row in legacy_rows(SHAPE_C):
            insert_connection(conn, as_adopted(row))
        before = full_snapshot(conn)

    database.yoyo("apply")
    with database.connect() as conn:
        assert_same(schema_snapshot(conn), fresh_schema, "applied and fresh schemas")
        rows = table_rows(conn)
        assert rows["platform_connections"] == before["rows"]["platform_connections"]
        assert rows["orgs"] == before["rows"]["orgs"]

    database.yoyo("rollback", "--all")
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "state before apply and after rollback")


# ---------------------------------------------------------------------------
# 6. Tenant isolation (0004): the org policy and the cmis_app role
# ---------------------------------------------------------------------------

#: What 0004 grants cmis_app in a database, and nothing more.
APP_PRIVILEGES = sorted(
    [
        ("schema cmis", "cmis_app", "USAGE"),
        ("cmis.orgs.org_id", "cmis_app", "SELECT"),
        *(
            ("cmis.platform_connections", "cmis_app", privilege)
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
        ),
    ]
)


def app_privileges(conn: Conn) -> list[tuple[str, str, str]]:
    """cmis_app's privileges on schema cmis and its tables and columns (functions apart)."""
    return sorted(
        (r["object"], r["grantee"], r["privilege"])
        for r in conn.execute(_PRIVILEGES, {"schema": "cmis"})
        if r["grantee"] == "cmis_app" and "(" not in r["object"]
    )


def test_fresh_install_isolates_organisations_and_grants_cmis_app_only_what_it_needs(
    database: Database,
) -> None:
    """An empty database gets RLS (not forced) with one org policy, USING and
    WITH CHECK on app.current_org_id; cmis_app is NOLOGIN, owns nothing, holds
    exactly USAGE, SELECT/INSERT/UPDATE/DELETE on the table, SELECT on
    cmis.orgs(org_id) and EXECUTE on every function."""
    database.yoyo("apply")
    with database.connect() as conn:
        security = row_security(conn)
        assert security["row_security"]["platform_connections"] == (True, False)
        assert security["policies"] == {
            "platform_connections.platform_connections_org_isolation": {
                "name": "platform_connections.platform_connections_org_isolation",
                "permissive": "PERMISSIVE",
                "roles": ["public"],
                "cmd": "ALL",
                "qual": ORG_CHECK,
                "with_check": ORG_CHECK,
            }
        }
        role = one(
            conn,
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls"
            " FROM pg_roles WHERE rolname = 'cmis_app'",
        )
        assert not any(role.values()), role
        assert app_privileges(conn) == APP_PRIVILEGES
        owned = one(
            conn,
            "SELECT count(*) AS n FROM pg_class WHERE relowner = 'cmis_app'::regrole",
        )
        assert owned["n"] == 0
        executable = conn.execute(
            "SELECT p.proname::text AS name FROM pg_proc p"
            " WHERE p.pronamespace = 'cmis'::regnamespace"
            "   AND has_function_privilege('cmis_app', p.oid, 'EXECUTE')"
            "   AND EXISTS (SELECT FROM aclexplode(p.proacl) a"
            "                WHERE a.grantee = 'cmis_app'::regrole)"
            " ORDER BY 1"
        ).fetchall()
        assert [r["name"] for r in executable] == FUNCTIONS


UNSAFE_POLICY = """
DROP POLICY org_isolation ON cmis.platform_connections;
CREATE POLICY org_isolation ON cmis.platform_connections
    USING (org_id = current_setting('app.current_org_id', true)::uuid);
"""
NO_POLICY = """
DROP POLICY org_isolation ON cmis.platform_connections;
ALTER TABLE cmis.platform_connections DISABLE ROW LEVEL SECURITY;
"""


def test_the_apps_policy_without_nullif_gets_it(database: Database) -> None:
    """The app's older policy casts the setting without NULLIF: once a
    transaction-local setting has ended it reads '' and every query fails with
    22P02. 0004 keeps the policy's name and gives it the NULLIF form, USING and
    WITH CHECK; the rollback gives back the old text."""
    load_legacy(database, SHAPE_A_DELETED_AT, UNSAFE_POLICY)
    with database.connect() as conn:
        before = full_snapshot(conn)
    database.yoyo("apply")
    with database.connect() as conn:
        policies = row_security(conn)["policies"]
        assert list(policies) == ["platform_connections.org_isolation"]
        policy = policies["platform_connections.org_isolation"]
        assert (policy["qual"], policy["with_check"]) == (ORG_CHECK, ORG_CHECK)
    database.yoyo("rollback", "--all")
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "legacy state before apply and after rollback")


def test_a_table_without_row_level_security_gets_it_and_gives_it_back(
    database: Database,
) -> None:
    """RLS off and no policy: 0004 enables RLS and creates the org policy;
    the rollback disables it and drops the policy and cmis_app's privileges."""
    load_legacy(database, SHAPE_A_DELETED_AT, NO_POLICY)
    with database.connect() as conn:
        before = full_snapshot(conn)
        assert before["row_security"]["platform_connections"] == (False, False)
    database.yoyo("apply")
    with database.connect() as conn:
        security = row_security(conn)
        assert security["row_security"]["platform_connections"] == (True, False)
        assert list(security["policies"]) == [
            "platform_connections.platform_connections_org_isolation"
        ]
        assert app_privileges(conn) == APP_PRIVILEGES
    database.yoyo("rollback", "--all")
    with database.connect() as conn:
        assert_same(full_snapshot(conn), before, "legacy state before apply and after rollback")
        assert app_privileges(conn) == []


def test_0004_runs_again_without_change_and_warns_of_a_wide_policy(database: Database) -> None:
    """Run over a database that already has everything, 0004 changes nothing and
    records nothing; a permissive policy that ignores app.current_org_id (it is
    OR'ed with the org policy and so widens it) is named in a WARNING."""
    database.yoyo("apply")
    migration = (ROOT / "sql" / "migrations" / "0004_tenant_isolation.sql").read_text("utf-8")
    with database.connect() as conn:
        conn.execute(
            "CREATE POLICY see_everything ON cmis.platform_connections FOR SELECT USING (true)"
        )
        before = full_snapshot(conn)
        warnings: list[str] = []
        conn.add_notice_handler(
            lambda diag: warnings.append(f"{diag.severity_nonlocalized}: {diag.message_primary}")
        )
        conn.execute(migration)
        assert_same(full_snapshot(conn), before, "state before and after running 0004 again")
    assert any(w.startswith("WARNING: policy see_everything") and "widen" in w for w in warnings), (
        warnings
    )


BYPASS_POLICY = """
DROP POLICY org_isolation ON cmis.platform_connections;
CREATE POLICY org_isolation ON cmis.platform_connections
    USING (org_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid
           OR current_setting('app.is_admin', true) = 'on');
"""


def test_an_org_policy_with_a_bypass_is_not_taken_for_isolation(database: Database) -> None:
    """A policy that mentions app.current_org_id but adds a bypass is not one of
    the two forms 0004 knows: it is left exactly as it was (its bypass is not
    copied into a WITH CHECK), and the org policy is created beside it."""
    load_legacy(database, SHAPE_A_DELETED_AT, BYPASS_POLICY)
    with database.connect() as conn:
        before = row_security(conn)["policies"]["platform_connections.org_isolation"]
    database.yoyo("apply")
    with database.connect() as conn:
        policies = row_security(conn)["policies"]
    assert policies["platform_connections.org_isolation"] == before
    assert before["with_check"] is None
    ours = policies["platform_connections.platform_connections_org_isolation"]
    assert (ours["qual"], ours["with_check"]) == (ORG_CHECK, ORG_CHECK)
