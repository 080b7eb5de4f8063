"""Hardening: a hostile caller search_path, and injection attempts in every argument.

What is proven, against the real database:

1. **Pinned search_path.** Schema ``evil`` holds look-alikes of what the
   functions name: tables ``platform_connections`` and ``orgs`` (same columns,
   empty, every write recorded by a trigger; a read would find them empty and
   change the outcome), the built-in functions they or a careless edit of them
   could call (``now()``, ``clock_timestamp()``, ``gen_random_uuid()``,
   ``btrim``, ``lower``, ``left``, ``char_length``, ``quote_literal``,
   ``array_to_string``, ``format``, ``set_config``, ``current_setting``,
   ``row_security_active``, ``pg_advisory_xact_lock``, ``hashtext``, ...) and
   operators (``=``, ``<>``, ``~``, ``!~``, ``!~*``, ``||``, ``<``, ``-``, ...)
   for the types they compare. Each look-alike forwards to the real one but
   first records its call in ``evil.calls`` and raises a NOTICE (the notice
   survives an aborted statement, so error paths are watched too). The caller
   sets ``search_path = evil, pg_catalog, public`` (pg_catalog after evil, else
   it is implicitly searched first), or the same behind ``pg_temp`` holding
   temporary look-alike tables (temporary functions are never found
   unqualified, so only tables). Under it every function of schema ``cmis`` is
   called with bind parameters -- create, update, disconnect, reconnect
   (restore), restore by id, purge, the org-scope check, the key lock, and their
   error paths: results are right, rows land in ``cmis.platform_connections``,
   the lock is really held, no look-alike was reached, the look-alike tables
   stay empty. (Types are not shadowed: the caller's own casts would reach them.)

   The trap is shown to work: the caller's own unqualified calls reach each
   look-alike; a copy of each function with its ``SET search_path`` removed
   reaches them; a copy that keeps the pinned path but names its table
   unqualified writes the ``pg_temp`` look-alike. ``COALESCE`` is syntax, not a
   function: a look-alike named ``coalesce`` is never called by it (shown).

   The repository's own statements are search_path-safe too (a regression
   test: they once called ``set_config`` and ``NULLIF`` (``text = text``)
   unqualified, and a ``set_config`` look-alike decided which org the write
   went to).

2. **Injection.** Strings built to break out of a quoted literal, a dollar
   quote, a client-side placeholder or a comment, plus unicode (RTL overrides,
   emoji, combining characters, look-alike quotes), control characters,
   backslashes and values at the length limits, are passed as every free-text
   argument of ``cmis.upsert_platform_connection`` (account id and name, both
   tokens, string values and keys inside ``p_scopes`` / ``p_account_metadata``)
   three ways: bind parameters, the repository, and ``sql.Literal`` rendered
   into the statement text (sent with the simple query protocol, which would
   run a smuggled second statement). Each value reads back byte for byte after
   the create and the update; the schema, tables and functions still exist; the
   table has exactly one more row; ``cmis.orgs`` is untouched. A NUL, which
   PostgreSQL text cannot hold, is refused with nothing written (through the
   repository as ``InvalidInputError`` with psycopg's explanation; a
   regression test: it was once the bare ``RepositoryError('DataError')``). ``p_platform`` and
   ``p_status`` refuse every such string with 22023, and the uuid arguments of
   soft-delete and restore refuse non-uuids with 22P02, nothing changed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.errors import Diagnostic
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cmis_repo import (
    ConnectionInput,
    InvalidInputError,
    Outcome,
    PlatformConnectionRepository,
    RepositoryError,
)
from tests.support.orgs import make_org

#: Every function of schema cmis; test_every_cmis_function_is_covered_here keeps it true.
CMIS_FUNCTIONS = (
    "lock_platform_connection_key",
    "assert_platform_connection_org_scope",
    "upsert_platform_connection",
    "soft_delete_platform_connection",
    "restore_platform_connection",
    "purge_platform_connections",
    "upsert_platform_connections",
)


@pytest.fixture(autouse=True)
def _statement_timeout(db: psycopg.Connection[Any]) -> None:
    """A smuggled ``pg_sleep(10)`` would fail the test instead of passing slowly."""
    db.execute("SET statement_timeout = '5s'")


# --------------------------------------------------------------------------
# 1. A hostile search_path
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookalike:
    """A function or operator in schema evil that shadows a pg_catalog one."""

    label: str  # what it records
    ddl: str  # creates it
    probe: str  # an unqualified SQL expression that reaches it


def _function(signature: str, returns: str, forward: str, probe: str) -> Lookalike:
    label = re.sub(r"\b[a-z]\w* (\w+)", r"\1", signature).replace('"', "")  # drop arg names
    body = f"PERFORM {forward}; RETURN;" if returns == "void" else f"RETURN {forward};"
    ddl = f"""
        CREATE FUNCTION evil.{signature} RETURNS {returns} LANGUAGE plpgsql VOLATILE
        SET search_path = pg_catalog
        AS $f$ BEGIN PERFORM evil.record('{label}'); {body} END $f$"""
    return Lookalike(label, ddl, probe)


def _operator(number: int, op: str, left: str, right: str, returns: str, probe: str) -> Lookalike:
    label = f"{op} ({left}, {right})"
    ddl = f"""
        CREATE FUNCTION evil.op_{number}(a {left}, b {right}) RETURNS {returns}
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog
        AS $f$ BEGIN PERFORM evil.record('{label}');
                     RETURN a OPERATOR(pg_catalog.{op}) b; END $f$;
        CREATE OPERATOR evil.{op} (LEFTARG = {left}, RIGHTARG = {right},
                                   FUNCTION = evil.op_{number})"""
    return Lookalike(label, ddl, probe)


LOOKALIKES = [
    _function("now()", "timestamptz", "pg_catalog.now()", "now()"),
    _function(
        "clock_timestamp()", "timestamptz", "pg_catalog.clock_timestamp()", "clock_timestamp()"
    ),
    _function(
        "statement_timestamp()",
        "timestamptz",
        "pg_catalog.statement_timestamp()",
        "statement_timestamp()",
    ),
    _function(
        "transaction_timestamp()",
        "timestamptz",
        "pg_catalog.transaction_timestamp()",
        "transaction_timestamp()",
    ),
    _function("gen_random_uuid()", "uuid", "pg_catalog.gen_random_uuid()", "gen_random_uuid()"),
    _function("btrim(a text)", "text", "pg_catalog.btrim(a)", "btrim(' x '::text)"),
    _function("btrim(a text, b text)", "text", "pg_catalog.btrim(a, b)", "btrim('xax'::text, 'x')"),
    _function("lower(a text)", "text", "pg_catalog.lower(a)", "lower('X'::text)"),
    _function("upper(a text)", "text", "pg_catalog.upper(a)", "upper('x'::text)"),
    _function("left(a text, n integer)", "text", "pg_catalog.left(a, n)", "left('abc'::text, 1)"),
    _function(
        "char_length(a text)", "integer", "pg_catalog.char_length(a)", "char_length('ab'::text)"
    ),
    _function("length(a text)", "integer", "pg_catalog.length(a)", "length('ab'::text)"),
    _function(
        "quote_literal(a text)", "text", "pg_catalog.quote_literal(a)", "quote_literal('a'::text)"
    ),
    _function("quote_ident(a text)", "text", "pg_catalog.quote_ident(a)", "quote_ident('a'::text)"),
    _function(
        "array_to_string(a anyarray, s text)",
        "text",
        "pg_catalog.array_to_string(a, s)",
        "array_to_string(ARRAY['a'], ',')",
    ),
    _function(
        "set_config(a text, b text, c boolean)",
        "text",
        "pg_catalog.set_config(a, b, c)",
        "set_config('evil.probe', 'x', true)",
    ),
    _function(
        "current_setting(a text)",
        "text",
        "pg_catalog.current_setting(a)",
        "current_setting('search_path')",
    ),
    _function(
        "current_setting(a text, b boolean)",
        "text",
        "pg_catalog.current_setting(a, b)",
        "current_setting('app.current_org_id', true)",
    ),
    _function(
        "pg_advisory_xact_lock(k bigint)",
        "void",
        "pg_catalog.pg_advisory_xact_lock(k)",
        "pg_advisory_xact_lock(42::bigint)",
    ),
    _function(
        "pg_advisory_xact_lock(k integer, l integer)",
        "void",
        "pg_catalog.pg_advisory_xact_lock(k, l)",
        "pg_advisory_xact_lock(4, 2)",
    ),
    _function("hashtext(a text)", "integer", "pg_catalog.hashtext(a)", "hashtext('a'::text)"),
    _function("md5(a text)", "text", "pg_catalog.md5(a)", "md5('a'::text)"),
    _function("format(a text)", "text", "pg_catalog.format(a)", "format('a'::text)"),
    _function(
        "row_security_active(a oid)",
        "boolean",
        "pg_catalog.row_security_active(a)",
        "row_security_active('cmis.orgs'::regclass)",
    ),
    _operator(1, "=", "uuid", "uuid", "boolean", "gen_random_uuid() = gen_random_uuid()"),
    _operator(2, "<>", "uuid", "uuid", "boolean", "gen_random_uuid() <> gen_random_uuid()"),
    _operator(3, "=", "text", "text", "boolean", "'a'::text = 'b'::text"),
    _operator(4, "<>", "text", "text", "boolean", "'a'::text <> 'b'::text"),
    _operator(5, "~", "text", "text", "boolean", "'a'::text ~ 'b'::text"),
    _operator(6, "!~", "text", "text", "boolean", "'a'::text !~ 'b'::text"),
    _operator(7, "||", "text", "text", "text", "'a'::text || 'b'::text"),
    _operator(8, ">", "integer", "integer", "boolean", "1 > 2"),
    _operator(9, "<=", "integer", "integer", "boolean", "1 <= 2"),
    _operator(10, "!~*", "text", "text", "boolean", "'a'::text !~* 'b'::text"),
    _operator(11, "<", "interval", "interval", "boolean", "interval '1 day' < interval '2 days'"),
    _operator(
        12, "<", "timestamptz", "timestamptz", "boolean", "'2000-01-01'::timestamptz < now()"
    ),
    _operator(13, "-", "timestamptz", "interval", "timestamptz", "now() - interval '1 day'"),
]

#: COALESCE is syntax: this look-alike exists, and is shown never to be called by it.
COALESCE_LOOKALIKE = _function(
    '"coalesce"(a anyelement, b anyelement)', "anyelement", "COALESCE(a, b)", "coalesce(NULL, 1)"
)

EVIL_SCHEMA = """
    CREATE SCHEMA evil;
    CREATE TABLE evil.calls (seq bigint GENERATED ALWAYS AS IDENTITY, name text NOT NULL);
    CREATE FUNCTION evil.record(p_name text) RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog
    AS $f$ BEGIN
        INSERT INTO evil.calls (name) VALUES (p_name);
        RAISE NOTICE 'evil: %', p_name;
    END $f$;
    CREATE FUNCTION evil.record_write() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $f$ BEGIN
        PERFORM evil.record(TG_OP || ' '
            || CASE WHEN TG_TABLE_SCHEMA LIKE 'pg\\_temp\\_%' THEN 'pg_temp'
                    ELSE TG_TABLE_SCHEMA END
            || '.' || TG_TABLE_NAME);
        RETURN NULL;
    END $f$;
"""

#: Look-alike tables, empty; {schema} is evil or pg_temp.
DECOY_TABLES = """
    CREATE {temp} TABLE {schema}.platform_connections
        (LIKE cmis.platform_connections INCLUDING DEFAULTS);
    CREATE {temp} TABLE {schema}.orgs (LIKE cmis.orgs INCLUDING DEFAULTS);
    CREATE TRIGGER record_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE
        ON {schema}.platform_connections FOR EACH STATEMENT EXECUTE FUNCTION evil.record_write();
    CREATE TRIGGER record_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE
        ON {schema}.orgs FOR EACH STATEMENT EXECUTE FUNCTION evil.record_write();
"""

#: The caller's search_path per variant; the decoy tables the variant adds.
VARIANTS = {
    "evil-schema": ("evil, pg_catalog, public", ("evil",)),
    "pg_temp": ("pg_temp, evil, pg_catalog, public", ("evil", "pg_temp")),
}


def _scalar(db: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@dataclass
class Trap:
    """Look-alikes installed; ``arm`` makes the caller's search_path hostile."""

    db: psycopg.Connection[Any]
    decoys: tuple[str, ...]
    search_path: str
    notices: list[str] = field(default_factory=list)

    def arm(self) -> None:
        # SET is a utility statement: no function of the caller's path is involved.
        self.db.execute(f"SET search_path = {self.search_path}")

    def disarm(self) -> None:
        self.db.execute("RESET search_path")

    def hits(self) -> set[str]:
        """Every look-alike reached: from evil.calls, and from notices (error paths)."""
        recorded = {name for (name,) in self.db.execute("SELECT name FROM evil.calls")}
        return recorded | set(self.notices)

    def decoy_rows(self) -> dict[str, int]:
        counts = {}
        for schema in self.decoys:
            for table in ("platform_connections", "orgs"):
                name = f"{schema}.{table}"
                counts[name] = _scalar(self.db, f"SELECT count(*) FROM {name}")
        return counts


def _install_trap(db: psycopg.Connection[Any], variant: str) -> Iterator[Trap]:
    search_path, decoys = VARIANTS[variant]
    db.execute("SET client_min_messages = notice")
    db.execute(EVIL_SCHEMA)
    for lookalike in [*LOOKALIKES, COALESCE_LOOKALIKE]:
        db.execute(lookalike.ddl)
    for schema in decoys:
        db.execute(DECOY_TABLES.format(schema=schema, temp="TEMP" if schema == "pg_temp" else ""))
    trap = Trap(db, decoys, search_path)

    def on_notice(diag: Diagnostic) -> None:
        message = diag.message_primary or ""
        if message.startswith("evil: "):
            trap.notices.append(message.removeprefix("evil: "))

    db.add_notice_handler(on_notice)
    yield trap
    db.remove_notice_handler(on_notice)


@pytest.fixture(params=list(VARIANTS))
def trap(request: pytest.FixtureRequest, db: psycopg.Connection[Any]) -> Iterator[Trap]:
    """The look-alikes, once per variant (evil schema; pg_temp tables in front of it)."""
    yield from _install_trap(db, request.param)


@pytest.fixture
def evil_trap(db: psycopg.Connection[Any]) -> Iterator[Trap]:
    yield from _install_trap(db, "evil-schema")


@pytest.fixture
def temp_trap(db: psycopg.Connection[Any]) -> Iterator[Trap]:
    yield from _install_trap(db, "pg_temp")


def _assert_untouched(trap: Trap) -> None:
    trap.disarm()
    assert trap.hits() == set(), "a look-alike in the caller's search_path was reached"
    assert set(trap.decoy_rows().values()) == {0}, trap.decoy_rows()


# -- the trap works ---------------------------------------------------------


@pytest.mark.parametrize("lookalike", LOOKALIKES, ids=lambda x: x.label)
def test_trap_catches_the_callers_own_unqualified_calls(evil_trap, lookalike):
    """Sanity: under the hostile path an unqualified call from the caller hits the look-alike."""
    evil_trap.arm()
    evil_trap.db.execute(f"SELECT {lookalike.probe}")
    evil_trap.disarm()
    assert lookalike.label in evil_trap.hits()
    assert lookalike.label in evil_trap.notices


def test_coalesce_is_syntax_and_cannot_be_shadowed(evil_trap, db):
    evil_trap.arm()
    assert db.execute("SELECT coalesce(NULL::int, 1)").fetchone() == (1,)
    assert evil_trap.hits() == set()
    assert db.execute('SELECT evil."coalesce"(NULL::int, 1)').fetchone() == (1,)
    assert evil_trap.hits() == {COALESCE_LOOKALIKE.label}


def test_trap_catches_unqualified_tables(trap, db):
    """Sanity: an unqualified table name resolves to the variant's look-alike table."""
    schema = trap.decoys[-1]
    trap.arm()
    db.execute(
        "INSERT INTO orgs (org_id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'x')"
    )
    db.execute("UPDATE platform_connections SET status = 'x'")
    trap.disarm()
    assert {f"INSERT {schema}.orgs", f"UPDATE {schema}.platform_connections"} <= trap.hits()
    assert trap.decoy_rows()[f"{schema}.orgs"] == 1


def _copy_function(db: psycopg.Connection[Any], name: str, edit: Any) -> None:
    """Create victim.<name>: cmis.<name>'s definition passed through ``edit``."""
    definition: str = _scalar(db, "SELECT pg_get_functiondef(%s::regproc)", (f"cmis.{name}",))
    header = f"CREATE OR REPLACE FUNCTION cmis.{name}("
    assert definition.startswith(header)
    db.execute("CREATE SCHEMA IF NOT EXISTS victim")
    db.execute(edit(definition.replace(header, f"CREATE FUNCTION victim.{name}(", 1)))


def _unpin(definition: str) -> str:
    unpinned, count = re.subn(r"^ SET search_path TO [^\n]*\n", "", definition, flags=re.M)
    assert count == 1, "the definition has no SET search_path line to remove"
    return unpinned


#: How to call each copy, and look-alikes its body is bound to reach when unpinned.
UNPINNED_CALLS = [
    pytest.param(
        "lock_platform_connection_key",
        "SELECT victim.lock_platform_connection_key(%(org)s, 'meta', 'acct')",
        {"hashtext(text)", "pg_advisory_xact_lock(integer, integer)", "|| (text, text)"},
        id="lock",
    ),
    pytest.param(
        "assert_platform_connection_org_scope",
        "SELECT victim.assert_platform_connection_org_scope(%(org)s)",
        {"current_setting(text, boolean)", "row_security_active(oid)"},
        id="assert-org-scope",
    ),
    pytest.param(
        "upsert_platform_connection",
        "SELECT * FROM victim.upsert_platform_connection(%(org)s, 'meta', 'acct')",
        {"!~ (text, text)", "= (uuid, uuid)", "= (text, text)", "clock_timestamp()"},
        id="upsert",
    ),
    pytest.param(
        "soft_delete_platform_connection",
        "SELECT * FROM victim.soft_delete_platform_connection(%(org)s, %(live)s)",
        {"= (uuid, uuid)", "clock_timestamp()"},
        id="soft-delete",
    ),
    pytest.param(
        "restore_platform_connection",
        "SELECT * FROM victim.restore_platform_connection(%(org)s, %(deleted)s)",
        {"= (uuid, uuid)", "clock_timestamp()"},
        id="restore",
    ),
    pytest.param(
        "purge_platform_connections",
        "SELECT victim.purge_platform_connections(%(org)s, interval '0')",
        {"< (interval, interval)", "= (uuid, uuid)", "clock_timestamp()"},
        id="purge",
    ),
    pytest.param(
        "upsert_platform_connections",
        """SELECT * FROM victim.upsert_platform_connections(
               %(org)s, '[{"platform": "meta", "account_id": "acct"}]')""",
        {"hashtext(text)", "pg_advisory_xact_lock(integer, integer)", "clock_timestamp()"},
        id="bulk-upsert",
    ),
]


def test_every_cmis_function_is_covered_here(db):
    """A function added to schema cmis must be added to the hostile-path tests below."""
    names = {
        name
        for (name,) in db.execute(
            "SELECT proname::text FROM pg_proc WHERE pronamespace = 'cmis'::regnamespace"
        )
    }
    assert names == set(CMIS_FUNCTIONS)
    assert {case.values[0] for case in UNPINNED_CALLS} == set(CMIS_FUNCTIONS)


@pytest.mark.parametrize(("name", "statement", "expected_hits"), UNPINNED_CALLS)
def test_trap_catches_a_copy_without_the_pinned_path(
    evil_trap, db, org_id, name, statement, expected_hits
):
    """Sanity: the same function minus its SET search_path is caught by the trap."""
    ids = _live_and_deleted(db, org_id)
    _copy_function(db, name, _unpin)
    evil_trap.arm()
    db.execute(statement, {"org": org_id, **ids})
    evil_trap.disarm()
    assert expected_hits <= evil_trap.hits()


def test_trap_catches_an_unqualified_table_despite_the_pinned_path(temp_trap, db, org_id):
    """Sanity for the pg_temp variant: pinned ``pg_catalog, pg_temp`` still finds temp tables.

    So the pg_temp variant of the tests below would catch a function that named
    its table without the schema.
    """
    ids = _live_and_deleted(db, org_id)
    _copy_function(
        db,
        "soft_delete_platform_connection",
        lambda d: re.sub(
            r"(FROM|UPDATE) cmis\.platform_connections", r"\1 platform_connections", d
        ),
    )
    db.execute(
        "INSERT INTO pg_temp.platform_connections SELECT * FROM cmis.platform_connections"
        " WHERE connection_id = %s",
        (ids["live"],),
    )
    temp_trap.arm()
    db.execute(
        "SELECT * FROM victim.soft_delete_platform_connection(%s, %s)", (org_id, ids["live"])
    )
    temp_trap.disarm()
    assert "UPDATE pg_temp.platform_connections" in temp_trap.hits()
    live = db.execute(
        "SELECT deleted_at FROM cmis.platform_connections WHERE connection_id = %s", (ids["live"],)
    ).fetchone()
    assert live == (None,), "the copy wrote the look-alike, not the real table"


# -- the functions under a hostile path -------------------------------------


class SqlCalls:
    """The functions called with bind parameters, as an app or psql user would."""

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        self.db = db

    def upsert(self, org_id: uuid.UUID, account_id: str, token: str) -> tuple[str, uuid.UUID]:
        row = self.db.execute(
            """SELECT outcome, connection_id FROM cmis.upsert_platform_connection(
                   p_org_id => %s, p_platform => 'meta', p_account_id => %s,
                   p_access_token => %s)""",
            (org_id, account_id, token),
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    def soft_delete(self, org_id: uuid.UUID, connection_id: uuid.UUID) -> bool:
        rows = self.db.execute(
            "SELECT deleted_at FROM cmis.soft_delete_platform_connection(%s, %s)",
            (org_id, connection_id),
        ).fetchall()
        assert all(deleted_at is not None for (deleted_at,) in rows)
        return len(rows) == 1

    def restore(self, org_id: uuid.UUID, connection_id: uuid.UUID) -> datetime | None:
        rows = self.db.execute(
            "SELECT deleted_at FROM cmis.restore_platform_connection(%s, %s)",
            (org_id, connection_id),
        ).fetchall()
        assert len(rows) == 1
        return rows[0][0]  # type: ignore[no-any-return]

    def purge(self, org_id: uuid.UUID) -> int:
        return int(
            _scalar(
                self.db,
                "SELECT cmis.purge_platform_connections(p_org_id => %s, p_older_than => %s)",
                (org_id, timedelta(0)),
            )
        )

    def assert_org_scope(self, org_id: uuid.UUID) -> None:
        self.db.execute("SELECT cmis.assert_platform_connection_org_scope(%s)", (org_id,))

    def lock(self, org_id: uuid.UUID, account_id: str) -> None:
        self.db.execute(
            "SELECT cmis.lock_platform_connection_key(p_org_id => %s, p_platform => 'meta',"
            " p_account_id => %s)",
            (org_id, account_id),
        )


class RepositoryCalls(SqlCalls):
    """The same through PlatformConnectionRepository, where it has a method for it."""

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        super().__init__(db)
        self.repo = PlatformConnectionRepository(db)

    def upsert(self, org_id: uuid.UUID, account_id: str, token: str) -> tuple[str, uuid.UUID]:
        result = self.repo.upsert(org_id, "meta", account_id, access_token=token)
        return result.outcome.value, result.connection.connection_id

    def soft_delete(self, org_id: uuid.UUID, connection_id: uuid.UUID) -> bool:
        return self.repo.soft_delete(org_id, connection_id)

    def restore(self, org_id: uuid.UUID, connection_id: uuid.UUID) -> datetime | None:
        return self.repo.restore(org_id, connection_id).deleted_at

    def purge(self, org_id: uuid.UUID) -> int:
        return self.repo.purge(org_id, older_than=timedelta(0))


def _live_and_deleted(db: psycopg.Connection[Any], org_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """A live row (meta/acct_live) and a soft-deleted one (meta/acct_deleted).

    Made with plain SQL calls, which leave app.current_org_id unset.
    """
    calls = SqlCalls(db)
    live = calls.upsert(org_id, "acct_live", "live")[1]
    deleted = calls.upsert(org_id, "acct_deleted", "gone")[1]
    assert calls.soft_delete(org_id, deleted)
    return {"live": live, "deleted": deleted}


def _lifecycle(calls: SqlCalls, org_id: uuid.UUID) -> uuid.UUID:
    """Connect, update, disconnect, reconnect, disconnect, restore, purge, lock: results right."""
    outcome, connection_id = calls.upsert(org_id, "act_1", "token-1")
    assert outcome == Outcome.CREATED
    assert calls.upsert(org_id, "act_1", "token-2") == (Outcome.UPDATED, connection_id)
    assert calls.soft_delete(org_id, connection_id)
    assert not calls.soft_delete(org_id, connection_id), "a deleted row was deleted again"
    assert calls.upsert(org_id, "act_1", "token-3") == (Outcome.RESTORED, connection_id)
    assert calls.soft_delete(org_id, connection_id)
    assert calls.restore(org_id, connection_id) is None  # live again
    gone = calls.upsert(org_id, "act_gone", "token-gone")[1]
    assert calls.soft_delete(org_id, gone)
    assert calls.purge(org_id) == 1, "purge must remove exactly the one deleted row"
    calls.assert_org_scope(org_id)
    calls.lock(org_id, "act_locked")
    return connection_id


def _lock_is_held(connect: Any, org_id: uuid.UUID, account_id: str) -> bool:
    """Whether another session is refused the key lock of (org, meta, account)."""
    with connect() as other:
        acquired = _scalar(
            other,
            """SELECT pg_try_advisory_xact_lock(hashtext('cmis.platform_connections'),
                      hashtext(%s::text || E'\\x1f' || 'meta' || E'\\x1f' || %s))""",
            (org_id, account_id),
        )
        other.rollback()
    return not acquired


def _set_current_org(db: psycopg.Connection[Any], value: object) -> None:
    db.execute(sql.SQL("SET app.current_org_id = {}").format(sql.Literal(str(value))))


@pytest.mark.parametrize("current_org", ["unset", "same-org"])
def test_every_function_ignores_a_hostile_search_path(trap, db, org_id, connect, current_org):
    if current_org == "same-org":
        _set_current_org(db, org_id)
    trap.arm()
    connection_id = _lifecycle(SqlCalls(db), org_id)

    _assert_untouched(trap)
    rows = db.execute(
        """SELECT connection_id, account_id, access_token, status, deleted_at,
                  created_at <= updated_at
             FROM cmis.platform_connections WHERE org_id = %s""",
        (org_id,),
    ).fetchall()
    assert rows == [(connection_id, "act_1", "token-3", "active", None, True)]
    assert _lock_is_held(connect, org_id, "act_locked"), "the key lock was not taken"
    assert not _lock_is_held(connect, org_id, "act_other"), "sanity: other keys are free"


@pytest.mark.parametrize("current_org", ["unset", "same-org"])
def test_the_bulk_call_ignores_a_hostile_search_path(trap, db, org_id, current_org):
    """cmis.upsert_platform_connections, through SQL and the repository: create,
    update, then restore after a disconnect, all under the hostile path."""
    if current_org == "same-org":
        _set_current_org(db, org_id)
    rows = (
        '[{"platform": "meta", "account_id": "bulk_1"}, {"platform": "google", "account_id": "b2"}]'
    )
    bulk = "SELECT outcome, connection_id FROM cmis.upsert_platform_connections(%s, %s)"
    trap.arm()
    created = db.execute(bulk, (org_id, rows)).fetchall()
    assert [outcome for outcome, _ in created] == ["created", "created"]
    assert [o for o, _ in db.execute(bulk, (org_id, rows)).fetchall()] == ["updated", "updated"]
    assert SqlCalls(db).soft_delete(org_id, created[0][1])
    again = PlatformConnectionRepository(db).upsert_many(
        org_id, [ConnectionInput("meta", "bulk_1"), ConnectionInput("linkedin", "b3")]
    )
    assert [r.outcome for r in again] == [Outcome.RESTORED, Outcome.CREATED]
    assert again[0].connection.connection_id == created[0][1]
    _assert_untouched(trap)


# Regression: the repository's statements once called set_config(...) and
# NULLIF(scope.org_id, '') (operator text = text) unqualified, so they resolved in
# the caller's search_path and a set_config look-alike chose the org written to.


def test_the_repository_ignores_a_hostile_search_path(trap, db, org_id):
    trap.arm()
    _lifecycle(RepositoryCalls(db), org_id)
    _assert_untouched(trap)


def test_the_repository_writes_for_the_org_it_is_given(evil_trap, db, org_id):
    theirs = make_org(db, "Theirs")
    db.execute(
        sql.SQL(
            """CREATE OR REPLACE FUNCTION evil.set_config(a text, b text, c boolean)
               RETURNS text LANGUAGE sql SET search_path = pg_catalog
               AS $f$ SELECT pg_catalog.set_config(a, {}, c) $f$"""
        ).format(sql.Literal(str(theirs)))
    )
    evil_trap.arm()
    row = PlatformConnectionRepository(db).upsert(org_id, "meta", "act_1").connection
    evil_trap.disarm()
    assert row.org_id == org_id, "a set_config look-alike redirected the write to another org"


#: Calls refused under a hostile path: app.current_org_id to set first (a key of the
#: parameters), SQLSTATE, a fragment of the message (built with quote_literal, left,
#: char_length, array_to_string, format: none may be a look-alike).
ERROR_CASES = [
    pytest.param(
        None,
        "SELECT * FROM cmis.upsert_platform_connection(%(org)s, 'Meta Ads', 'a')",
        "22023",
        "lower-case slug, got 'Meta Ads'",
        id="platform-not-a-slug",
    ),
    pytest.param(
        None,
        "SELECT * FROM cmis.upsert_platform_connection(%(org)s, 'meta', 'a', p_status => 'x')",
        "22023",
        "warning, expired, revoked, error, got 'x'",
        id="status-unknown",
    ),
    pytest.param(
        None,
        "SELECT * FROM cmis.upsert_platform_connection(%(org)s, 'meta', %(long)s)",
        "22001",
        "is 256 characters long",
        id="account-too-long",
    ),
    pytest.param(
        None,
        "SELECT * FROM cmis.upsert_platform_connection(%(org)s, 'meta', ' a')",
        "22023",
        "got ' a'",
        id="account-untrimmed",
    ),
    pytest.param(
        None,
        "SELECT * FROM cmis.upsert_platform_connection(%(org)s, 'meta', 'a',"
        " p_sync_frequency_minutes => 0)",
        "22023",
        "p_sync_frequency_minutes",
        id="sync-frequency-zero",
    ),
    pytest.param(
        None,
        "SELECT * FROM cmis.upsert_platform_connection(%(unknown)s::uuid, 'meta', 'a')",
        "23503",
        "unknown organisation",
        id="org-unknown",
    ),
    pytest.param(
        None,
        "SELECT * FROM cmis.upsert_platform_connection(NULL, 'meta', 'a')",
        "22004",
        "p_org_id",
        id="org-null",
    ),
    pytest.param(
        "unknown",
        "SELECT * FROM cmis.upsert_platform_connection(%(org)s, 'meta', 'a')",
        "42501",
        "refusing to touch another organisation",
        id="upsert-other-org-in-session",
    ),
    pytest.param(
        "garbage",
        "SELECT * FROM cmis.soft_delete_platform_connection(%(org)s, %(live)s)",
        "22023",
        "got 'not-a-uuid'",
        id="soft-delete-session-org-not-a-uuid",
    ),
    pytest.param(
        None,
        "SELECT * FROM cmis.soft_delete_platform_connection(%(org)s, NULL)",
        "22004",
        "p_connection_id",
        id="soft-delete-null",
    ),
    pytest.param(
        None,
        "SELECT * FROM cmis.restore_platform_connection(%(org)s, %(deleted)s)",
        "23505",
        "account 'acct_deleted'",
        id="restore-over-a-live-row",
    ),
    pytest.param(
        None,
        "SELECT cmis.purge_platform_connections(%(org)s, interval '-1 day')",
        "22023",
        "must not be negative",
        id="purge-negative",
    ),
]


@pytest.mark.parametrize(("setting", "statement", "sqlstate", "message"), ERROR_CASES)
def test_error_paths_ignore_a_hostile_search_path(
    trap, db, org_id, setting, statement, sqlstate, message
):
    ids = _live_and_deleted(db, org_id)
    # The app's own SQL makes a second, live row for the deleted row's key.
    db.execute(
        "INSERT INTO cmis.platform_connections (org_id, platform, account_id)"
        " VALUES (%s, 'meta', 'acct_deleted')",
        (org_id,),
    )
    params = {"org": org_id, "unknown": uuid.uuid4(), "garbage": "not-a-uuid", "long": "x" * 256}
    params.update(ids)
    trap.arm()
    if setting is not None:
        _set_current_org(db, params[setting])
    with pytest.raises(psycopg.Error) as caught, db.transaction():
        db.execute(statement, params)
    assert caught.value.sqlstate == sqlstate
    assert message in (caught.value.diag.message_primary or "")
    _assert_untouched(trap)


# --------------------------------------------------------------------------
# 2. Injection attempts
# --------------------------------------------------------------------------

#: Strings valid as every free-text argument (account ids: non-blank, trimmed, <= 255 chars).
INJECTIONS = {
    "close-paren-drop-table": "'); DROP TABLE cmis.platform_connections; --",
    "or-1-equals-1": "' OR '1'='1",
    "dollar-quote-drop-schema": "$$; DROP SCHEMA cmis CASCADE; $$",
    "dollar-tag": "$function$; DROP SCHEMA cmis CASCADE; $function$",
    "python-placeholders": "%s %(x)s {} {0} %% %",
    "server-placeholders": "$1 $2 :name ? @p",
    "backslash-quote-pg-sleep": "\\'; SELECT pg_sleep(10); --",
    "double-quote-delete-orgs": '"; DELETE FROM cmis.orgs; --',
    "comments": "*/ -- x\n; COMMIT; DROP TABLE cmis.orgs; /*",
    "crlf-truncate": "x;\r\nTRUNCATE cmis.platform_connections;\tx",
    "backslashes": "C:\\new\\table\\\\",
    "e-string-nul-as-text": "E'\\\\x00'",
    "escape-sequences-as-text": "\\x00 \\u0000 \\0 \\n \\\\",
    "rtl-override": "act\u200f_\u202etxt.exe\u202c",
    "emoji-zwj": (
        "\U0001f600 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f3f3\ufe0f\u200d\U0001f308"
    ),
    "combining": "e\u0301 a\u0308\u0308 Z\u0351\u0352\u0353",
    "lookalike-quotes": "\u2019 OR \u20191\u2019=\u20191 \u02bc\uff07",
    "non-bmp-and-scripts": (
        "\U0001d518\U0001d52b \u4e2d\u6587 \u0627\u0644\u0639\u0631\u0628\u064a\u0629"
    ),
    "control-characters": "a\x01\x07\x1b[31m\x1f\x7fb",
    "json-like": '{"a": [1, "\\""]}',
    "max-length-multibyte": "x" + "\U0001f600" * 253 + "y",
}
INJECTION_PARAMS = [pytest.param(value, id=name) for name, value in INJECTIONS.items()]

#: Near-misses of valid platforms and statuses, on top of the injections.
PLATFORM_NEAR_MISSES = ["meta'--", "meta;", "meta\u200f", "META", "meta\n", "m\u0435ta", "meta\\"]
STATUS_NEAR_MISSES = ["active'--", "active;", "active ", "Active", "active\u200b", "act\u0456ve"]

ROUTES = ["bind", "repository", "literal"]
JSON_ARGS = ("scopes", "account_metadata")


def call_upsert(route: str, db: psycopg.Connection[Any], **args: Any) -> tuple[str, uuid.UUID]:
    """cmis.upsert_platform_connection through ``route``; returns (outcome, connection_id)."""
    if route == "repository":
        repo = PlatformConnectionRepository(db)
        result = repo.upsert(
            args.pop("org_id"), args.pop("platform"), args.pop("account_id"), **args
        )
        return result.outcome.value, result.connection.connection_id
    values = {k: Jsonb(v) if k in JSON_ARGS and v is not None else v for k, v in args.items()}
    if route == "bind":
        named = ", ".join(f"p_{name} => %({name})s" for name in values)
        query = f"SELECT outcome, connection_id FROM cmis.upsert_platform_connection({named})"
        row = db.execute(query, values).fetchone()
    else:
        named = ", ".join(f"p_{name} => {{{name}}}" for name in values)
        template = f"SELECT outcome, connection_id FROM cmis.upsert_platform_connection({named})"
        statement = sql.SQL(template).format(**{k: sql.Literal(v) for k, v in values.items()})
        row = db.execute(statement).fetchone()  # no parameters: the simple query protocol
    assert row is not None
    return row[0], row[1]


def call_by_id(
    route: str, db: psycopg.Connection[Any], function: str, org_id: Any, connection_id: Any
) -> None:
    """soft_delete / restore through ``route``, with arguments that may not be uuids."""
    if route == "repository":
        repo = PlatformConnectionRepository(db)
        method = repo.soft_delete if function == "soft_delete" else repo.restore
        method(org_id, connection_id)
        return
    name = sql.Identifier("cmis", f"{function}_platform_connection")
    template = sql.SQL("SELECT * FROM {}(p_org_id => {}, p_connection_id => {})")
    if route == "bind":
        db.execute(
            template.format(name, sql.Placeholder(), sql.Placeholder()), (org_id, connection_id)
        )
    else:
        db.execute(template.format(name, sql.Literal(org_id), sql.Literal(connection_id)))


def _snapshot(db: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return db.execute(f"SELECT * FROM cmis.{table} ORDER BY 1").fetchall()


def _assert_schema_intact(db: psycopg.Connection[Any]) -> None:
    row = db.execute(
        """SELECT to_regnamespace('cmis') IS NOT NULL,
                  to_regclass('cmis.platform_connections') IS NOT NULL,
                  to_regclass('cmis.orgs') IS NOT NULL,
                  ARRAY(SELECT DISTINCT proname::text FROM pg_proc
                         WHERE pronamespace = to_regnamespace('cmis') ORDER BY 1)"""
    ).fetchone()
    assert row is not None
    assert row[:3] == (True, True, True), "schema cmis or one of its tables is gone"
    assert set(CMIS_FUNCTIONS) <= set(row[3]), f"a function is gone: {row[3]}"


def _stored(db: psycopg.Connection[Any], connection_id: uuid.UUID) -> dict[str, Any]:
    """The row's free-text columns as UTF-8 bytes (exactly as stored), and its jsonb."""
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """SELECT convert_to(account_id, 'UTF8') AS account_id,
                      convert_to(account_name, 'UTF8') AS account_name,
                      convert_to(access_token, 'UTF8') AS access_token,
                      convert_to(refresh_token, 'UTF8') AS refresh_token,
                      convert_to(scopes ->> 0, 'UTF8') AS first_scope,
                      scopes, account_metadata
                 FROM cmis.platform_connections WHERE connection_id = %s""",
            (connection_id,),
        ).fetchone()
    assert row is not None
    return row


def _free_text_args(value: str, org_id: uuid.UUID) -> dict[str, Any]:
    return {
        "org_id": org_id,
        "platform": "meta",
        "account_id": value,
        "account_name": value,
        "access_token": value,
        "refresh_token": value,
        "scopes": [value, "ads_read"],
        "account_metadata": {value: value, "nested": {value: [value, {"k": value}]}},
    }


def _expected(args: dict[str, Any]) -> dict[str, Any]:
    text = ("account_id", "account_name", "access_token", "refresh_token")
    return {
        **{name: args[name].encode() for name in text},
        "first_scope": args["scopes"][0].encode(),
        "scopes": args["scopes"],
        "account_metadata": args["account_metadata"],
    }


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("value", INJECTION_PARAMS)
def test_free_text_is_stored_verbatim(db, org_id, route, value):
    rows_before = len(_snapshot(db, "platform_connections"))
    orgs_before = _snapshot(db, "orgs")

    created = _free_text_args(value, org_id)
    outcome, connection_id = call_upsert(route, db, **created)
    assert outcome == Outcome.CREATED
    assert _stored(db, connection_id) == _expected(created)

    # The update path (UPDATE ... SET) stores verbatim too.
    updated = {**created, "account_name": value[::-1], "access_token": f"{value}{value}"}
    updated["scopes"] = [f"3{value}"]
    assert call_upsert(route, db, **updated) == (Outcome.UPDATED, connection_id)
    assert _stored(db, connection_id) == _expected(updated)

    _assert_schema_intact(db)
    assert len(_snapshot(db, "platform_connections")) == rows_before + 1
    matching = _scalar(
        db, "SELECT count(*) FROM cmis.platform_connections WHERE account_id = %s", (value,)
    )
    assert matching == 1
    assert _snapshot(db, "orgs") == orgs_before


@pytest.mark.parametrize("route", ROUTES)
def test_long_values_within_limits_are_stored_verbatim(db, org_id, route):
    unit = "'); DROP TABLE cmis.orgs; -- \U0001f600\\"  # 26 characters
    long_id = (unit * 10)[:254] + "x"  # 255 characters, multibyte: the varchar(255) limit
    args = {
        **_free_text_args(long_id, org_id),
        "account_name": (unit * 10)[:255],
        "access_token": unit * 40_000,  # ~1 MB
        "refresh_token": unit * 10_000,
        "scopes": [unit * 1000, *([unit] * 1000)],
    }
    outcome, connection_id = call_upsert(route, db, **args)
    assert outcome == Outcome.CREATED
    assert _stored(db, connection_id) == _expected(args)
    _assert_schema_intact(db)


# -- NUL: PostgreSQL text cannot hold it -----------------------------------

NUL_TEXT_ARGS = ["account_id", "account_name", "access_token", "refresh_token"]


@pytest.fixture
def existing(db: psycopg.Connection[Any], org_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """A live row (meta/acct_live) and a soft-deleted one (meta/acct_deleted)."""
    return _live_and_deleted(db, org_id)


def _refused(db: psycopg.Connection[Any], error_class: type[Exception], call: Any) -> Any:
    """Run ``call`` in a savepoint; it must raise ``error_class``; nothing may change."""
    rows_before = _snapshot(db, "platform_connections")
    orgs_before = _snapshot(db, "orgs")
    with pytest.raises(error_class) as caught, db.transaction():
        call()
    assert _snapshot(db, "platform_connections") == rows_before, "a refused call changed a row"
    assert _snapshot(db, "orgs") == orgs_before
    _assert_schema_intact(db)
    return caught.value


@pytest.mark.parametrize("argument", NUL_TEXT_ARGS)
def test_nul_in_text_is_refused_through_bind_parameters(db, org_id, existing, argument):
    args = {"org_id": org_id, "platform": "meta", "account_id": "acct_live", argument: "a\x00b"}
    error = _refused(db, psycopg.DataError, lambda: call_upsert("bind", db, **args))
    assert "NUL" in str(error)


@pytest.mark.parametrize(
    ("expression", "sqlstate"),
    [("E'a\\x00b'", "22021"), ("E'a\\u0000b'", "42601"), ("'a' || chr(0)", "54000")],
    ids=["e-string-hex", "e-string-unicode", "chr-0"],
)
@pytest.mark.parametrize("argument", NUL_TEXT_ARGS)
def test_nul_typed_in_sql_is_refused_by_the_server(
    db, org_id, existing, argument, expression, sqlstate
):
    """As a psql user typing the NUL into a literal: the server refuses it."""
    values: dict[str, sql.Composable] = {
        "p_platform": sql.Literal("meta"),
        "p_account_id": sql.Literal("acct_live"),
    }
    values[f"p_{argument}"] = sql.SQL(expression)
    statement = sql.SQL("SELECT * FROM cmis.upsert_platform_connection(p_org_id => {}, {})").format(
        sql.Literal(org_id),
        sql.SQL(", ").join(
            sql.SQL("{} => {}").format(sql.Identifier(k), v) for k, v in values.items()
        ),
    )
    error = _refused(db, psycopg.Error, lambda: db.execute(statement))
    assert error.sqlstate == sqlstate


def test_nul_cannot_be_rendered_as_a_literal(db):
    with pytest.raises(psycopg.DataError, match="NUL"):
        sql.Literal("a\x00b").as_string(db)


@pytest.mark.parametrize("argument", NUL_TEXT_ARGS)
def test_nul_through_the_repository_is_refused(db, org_id, existing, argument):
    args = {"org_id": org_id, "platform": "meta", "account_id": "acct_live", argument: "a\x00b"}
    error = _refused(db, RepositoryError, lambda: call_upsert("repository", db, **args))
    assert error.__cause__ is None


# Regression: this was once the bare RepositoryError('DataError'), sqlstate None.
def test_nul_through_the_repository_is_invalid_input(db, org_id, existing):
    repo = PlatformConnectionRepository(db)
    error = _refused(
        db, RepositoryError, lambda: repo.upsert(org_id, "meta", "acct_live", account_name="a\x00b")
    )
    assert isinstance(error, InvalidInputError)
    assert "NUL" in str(error)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("scopes", ["a\x00b"]),
        ("account_metadata", {"k": "a\x00b"}),
        ("account_metadata", {"a\x00b": 1}),
    ],
    ids=["scopes-value", "metadata-value", "metadata-key"],
)
def test_nul_in_jsonb_is_refused(db, org_id, existing, route, argument, value):
    """json.dumps writes NUL as the escape \\u0000, which jsonb refuses with 22P05."""
    args = {"org_id": org_id, "platform": "meta", "account_id": "acct_live", argument: value}
    expected = InvalidInputError if route == "repository" else psycopg.Error
    error = _refused(db, expected, lambda: call_upsert(route, db, **args))
    assert error.sqlstate == "22P05"


# -- validated arguments refuse what they do not accept ----------------------


def _refused_input(route: str, db: psycopg.Connection[Any], call: Any, sqlstate: str) -> None:
    expected = InvalidInputError if route == "repository" else psycopg.Error
    error = _refused(db, expected, call)
    assert error.sqlstate == sqlstate, f"{error.sqlstate}: {error}"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("value", [*INJECTION_PARAMS, *PLATFORM_NEAR_MISSES])
def test_platform_injection_is_refused(db, org_id, existing, route, value):
    args = {"org_id": org_id, "platform": value, "account_id": "acct_live", "access_token": "t"}
    _refused_input(route, db, lambda: call_upsert(route, db, **args), "22023")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("value", [*INJECTION_PARAMS, *STATUS_NEAR_MISSES])
def test_status_injection_is_refused(db, org_id, existing, route, value):
    """Aimed at the soft-deleted key: a write would restore it."""
    args = {"org_id": org_id, "platform": "meta", "account_id": "acct_deleted", "status": value}
    _refused_input(route, db, lambda: call_upsert(route, db, **args), "22023")


#: Non-uuid strings; <ID> stands for the real id, so a naive concatenation would match a row.
NOT_UUIDS = [
    "' OR '1'='1",
    "'); DROP TABLE cmis.platform_connections; --",
    "<ID>' OR '1'='1",
    "<ID>; DELETE FROM cmis.platform_connections",
    "<ID>'::uuid OR true --",
    "<ID>\u200f",
    "",
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("argument", ["org_id", "connection_id"])
@pytest.mark.parametrize(("function", "row"), [("soft_delete", "live"), ("restore", "deleted")])
@pytest.mark.parametrize("value", NOT_UUIDS)
def test_non_uuid_ids_are_refused(db, org_id, existing, route, argument, function, row, value):
    ids = {"org_id": str(org_id), "connection_id": str(existing[row])}
    ids[argument] = value.replace("<ID>", ids[argument])
    _refused_input(
        route,
        db,
        lambda: call_by_id(route, db, function, ids["org_id"], ids["connection_id"]),
        "22P02",
    )
