"""Tenant isolation, proven as the application connects: a login role that is
not a superuser, has no BYPASSRLS, owns nothing and holds only ``cmis_app``.

- Organisation A's session cannot read, update, restore, delete, purge or
  upsert organisation B's rows: through the functions (42501 when the org
  named differs from app.current_org_id), through the repository, or through
  plain SQL (row-level security hides B's rows and refuses B's new rows).
- A session with no org set sees no row and can write none (42501), also on a
  pooled connection where an earlier transaction's setting has ended.
- The repository's org setting ends with the transaction: it never reaches
  the next user of the connection; and it never replaces an org the
  transaction already acts for (a mixed-up org is refused, not served).
- The role cannot TRUNCATE, ALTER, drop or change the policy, switch row
  security off, create objects, replace functions or read other tables.
- The table's owner bypasses row-level security unless FORCE is on, which is
  why the application must not connect as the owner.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cmis_repo import (
    ConnectionInput,
    NotFoundError,
    PermissionDeniedError,
    PlatformConnectionRepository,
)
from tests.support.orgs import make_org

Conn = psycopg.Connection[Any]
SET_ORG = "SELECT set_config('app.current_org_id', %s, true)"
COUNT = "SELECT count(*) FROM cmis.platform_connections"


@dataclass(frozen=True)
class Tenants:
    """Two organisations, each with a live row (key meta/shared) and a deleted row."""

    a: uuid.UUID
    b: uuid.UUID
    a_live: uuid.UUID
    b_live: uuid.UUID
    b_deleted: uuid.UUID


def _fetch_one(conn: Conn, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def tenants(db: Conn) -> Tenants:
    """Written as the superuser (who bypasses row-level security) and committed."""
    a, b = make_org(db, "A"), make_org(db, "B")
    ids = {}
    for org, name in ((a, "a"), (b, "b")):
        for account, deleted in (("shared", None), (f"{name}_gone", "2020-01-01")):
            ids[f"{name}_{account}"] = _fetch_one(
                db,
                "INSERT INTO cmis.platform_connections"
                " (org_id, platform, account_id, access_token, deleted_at)"
                " VALUES (%s, 'meta', %s, %s, %s) RETURNING connection_id",
                (org, account, f"token-of-{name}", deleted),
            )
    db.commit()
    return Tenants(a, b, ids["a_shared"], ids["b_shared"], ids["b_b_gone"])


def b_rows(db: Conn, tenants: Tenants) -> list[tuple[Any, ...]]:
    """Organisation B's rows, read by the superuser: what must never change."""
    db.rollback()
    return db.execute(
        "SELECT * FROM cmis.platform_connections WHERE org_id = %s ORDER BY connection_id",
        (tenants.b,),
    ).fetchall()


@pytest.fixture
def as_a(connect_as_app: Callable[..., Conn], tenants: Tenants) -> Conn:
    """The application's connection, in a transaction acting for organisation A."""
    conn = connect_as_app()
    conn.execute(SET_ORG, (str(tenants.a),))
    return conn


def assert_refused(conn: Conn, query: str, params: Any, *names: uuid.UUID) -> str:
    """Run ``query``; it must fail with 42501 naming ``names``. Returns the message."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        conn.execute(query, params)
    conn.rollback()
    message = caught.value.diag.message_primary or ""
    for name in names:
        assert str(name) in message, message
    return message


# --- Through the functions ----------------------------------------------------

FUNCTION_CALLS_FOR_B = [
    pytest.param(
        "SELECT * FROM cmis.upsert_platform_connection(%(b)s, 'meta', 'shared',"
        " p_access_token => 'x')",
        id="upsert-b-existing-key",
    ),
    pytest.param(
        "SELECT * FROM cmis.upsert_platform_connection(%(b)s, 'meta', 'new_b')", id="upsert-b-new"
    ),
    pytest.param(
        "SELECT * FROM cmis.soft_delete_platform_connection(%(b)s, %(b_live)s)", id="soft_delete"
    ),
    pytest.param(
        "SELECT * FROM cmis.restore_platform_connection(%(b)s, %(b_deleted)s)", id="restore"
    ),
    pytest.param("SELECT cmis.purge_platform_connections(%(b)s, interval '0')", id="purge"),
]


@pytest.mark.parametrize("call", FUNCTION_CALLS_FOR_B)
def test_functions_refuse_another_org_than_the_sessions(db, tenants, as_a, call):
    before = b_rows(db, tenants)
    params = {"b": tenants.b, "b_live": tenants.b_live, "b_deleted": tenants.b_deleted}
    message = assert_refused(as_a, call, params, tenants.a, tenants.b)
    assert "app.current_org_id" in message
    assert b_rows(db, tenants) == before


@pytest.mark.parametrize("call", FUNCTION_CALLS_FOR_B)
def test_even_a_superuser_is_refused_when_the_orgs_differ(db, tenants, call):
    """The check is on the setting, not on row-level security: it holds for
    roles that bypass RLS too (a psql session that set the org by mistake)."""
    before = b_rows(db, tenants)
    db.execute(SET_ORG, (str(tenants.a),))
    params = {"b": tenants.b, "b_live": tenants.b_live, "b_deleted": tenants.b_deleted}
    assert_refused(db, call, params, tenants.a, tenants.b)
    assert b_rows(db, tenants) == before


def test_functions_reach_only_the_sessions_own_rows_by_id(db, tenants, as_a):
    """Org A naming itself but B's connection ids: nothing found, nothing changed."""
    before = b_rows(db, tenants)
    assert not as_a.execute(
        "SELECT * FROM cmis.soft_delete_platform_connection(%s, %s)", (tenants.a, tenants.b_live)
    ).fetchall()
    assert not as_a.execute(
        "SELECT * FROM cmis.restore_platform_connection(%s, %s)", (tenants.a, tenants.b_deleted)
    ).fetchall()
    # The same key as B's live row: A's own row is updated, B's is not touched.
    outcome, connection_id = as_a.execute(
        "SELECT outcome, connection_id FROM cmis.upsert_platform_connection(%s, 'meta', 'shared')",
        (tenants.a,),
    ).fetchone() or (None, None)
    assert (outcome, connection_id) == ("updated", tenants.a_live)
    as_a.commit()
    assert b_rows(db, tenants) == before


def test_functions_work_for_the_sessions_own_org(tenants, as_a):
    """The isolation does not get in the way: disconnect and reconnect as A."""
    deleted = as_a.execute(
        "SELECT connection_id FROM cmis.soft_delete_platform_connection(%s, %s)",
        (tenants.a, tenants.a_live),
    ).fetchall()
    assert deleted == [(tenants.a_live,)]
    again = as_a.execute(
        "SELECT outcome, connection_id FROM cmis.upsert_platform_connection(%s, 'meta', 'shared')",
        (tenants.a,),
    ).fetchone()
    assert again == ("restored", tenants.a_live)
    purged = _fetch_one(
        as_a, "SELECT cmis.purge_platform_connections(%s, interval '1 day')", (tenants.a,)
    )
    assert purged == 1  # A's row deleted in 2020, and only that
    as_a.commit()


# --- Through the repository ---------------------------------------------------


def test_repository_for_a_never_reaches_bs_rows(db, tenants, connect_as_app):
    before = b_rows(db, tenants)
    conn = connect_as_app()
    repo = PlatformConnectionRepository(conn)
    assert repo.get(tenants.a, tenants.b_live) is None
    assert repo.get(tenants.a, tenants.b_deleted, include_deleted=True) is None
    listed = repo.list(tenants.a, include_deleted=True)
    assert {c.org_id for c in listed} == {tenants.a}
    assert len(listed) == 2
    assert repo.soft_delete(tenants.a, tenants.b_live) is False
    with pytest.raises(NotFoundError):
        repo.restore(tenants.a, tenants.b_deleted)
    assert repo.purge(tenants.a, older_than=timedelta(0)) == 1  # A's own deleted row
    result = repo.upsert(tenants.a, "meta", "shared", access_token="new")
    assert (result.outcome, result.connection.connection_id) == ("updated", tenants.a_live)
    conn.commit()
    assert b_rows(db, tenants) == before


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda repo, t: repo.list(t.b, include_deleted=True), id="list"),
        pytest.param(lambda repo, t: repo.get(t.b, t.b_live), id="get"),
        pytest.param(lambda repo, t: repo.upsert(t.b, "meta", "shared"), id="upsert"),
        pytest.param(
            lambda repo, t: repo.upsert_many(t.b, [ConnectionInput("meta", "x")]), id="upsert_many"
        ),
        pytest.param(lambda repo, t: repo.soft_delete(t.b, t.b_live), id="soft_delete"),
        pytest.param(lambda repo, t: repo.restore(t.b, t.b_deleted), id="restore"),
        pytest.param(lambda repo, t: repo.purge(t.b, older_than=timedelta(0)), id="purge"),
    ],
)
def test_repository_never_replaces_the_org_the_transaction_acts_for(
    db, tenants, connect_as_app, call
):
    """The app's middleware set org A for the transaction; a mixed-up org B
    passed to the repository is refused (42501 naming both), not served: the
    repository sets the org only when the transaction has none."""
    before = b_rows(db, tenants)
    conn = connect_as_app()
    conn.execute(SET_ORG, (str(tenants.a),))
    with pytest.raises(PermissionDeniedError) as refused:
        call(PlatformConnectionRepository(conn), tenants)
    assert str(tenants.a) in str(refused.value)
    assert str(tenants.b) in str(refused.value)
    conn.rollback()
    assert b_rows(db, tenants) == before


def test_repositorys_org_setting_ends_with_the_transaction(tenants, connect_as_app):
    """Pooled connections: the next user of the connection inherits no org."""
    for autocommit in (False, True):
        conn = connect_as_app(autocommit=autocommit)
        repo = PlatformConnectionRepository(conn)
        assert len(repo.list(tenants.a)) == 1
        if not autocommit:
            conn.commit()
        assert _fetch_one(conn, "SELECT current_setting('app.current_org_id', true)") == ""
        assert _fetch_one(conn, COUNT) == 0
        conn.rollback()


# --- Through plain SQL --------------------------------------------------------


def test_plain_sql_sees_and_changes_only_the_sessions_org(db, tenants, as_a):
    before = b_rows(db, tenants)
    assert _fetch_one(as_a, COUNT) == 2
    assert (
        _fetch_one(
            as_a, "SELECT count(*) FROM cmis.platform_connections WHERE org_id = %s", (tenants.b,)
        )
        == 0
    )
    for statement in (
        "UPDATE cmis.platform_connections SET access_token = 'stolen' WHERE org_id = %s",
        "UPDATE cmis.platform_connections SET deleted_at = NULL WHERE org_id = %s",
        "DELETE FROM cmis.platform_connections WHERE org_id = %s",
    ):
        assert as_a.execute(statement, (tenants.b,)).rowcount == 0, statement
    as_a.commit()
    assert b_rows(db, tenants) == before


PLAIN_WRITES_INTO_B = [
    pytest.param(
        "INSERT INTO cmis.platform_connections (org_id, platform, account_id)"
        " VALUES (%(b)s, 'meta', 'planted')",
        id="insert-for-b",
    ),
    pytest.param(
        "UPDATE cmis.platform_connections SET org_id = %(b)s WHERE connection_id = %(a_live)s",
        id="move-own-row-to-b",
    ),
    pytest.param(
        "INSERT INTO cmis.platform_connections AS c (org_id, platform, account_id)"
        " VALUES (%(b)s, 'meta', 'shared')"
        " ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL"
        " DO UPDATE SET access_token = 'stolen'",
        id="insert-on-conflict-into-b",
    ),
]


@pytest.mark.parametrize("statement", PLAIN_WRITES_INTO_B)
def test_plain_sql_cannot_write_rows_for_another_org(db, tenants, as_a, statement):
    before = b_rows(db, tenants)
    message = assert_refused(as_a, statement, {"b": tenants.b, "a_live": tenants.a_live})
    assert "row-level security" in message
    assert b_rows(db, tenants) == before


# --- With no org set ----------------------------------------------------------


@pytest.mark.parametrize("ended_setting", [False, True], ids=["never-set", "set-and-ended"])
def test_a_session_with_no_org_sees_nothing_and_writes_nothing(
    db, tenants, connect_as_app, ended_setting
):
    conn = connect_as_app()
    if ended_setting:  # a pooled connection: the setting now reads '', not NULL
        conn.execute(SET_ORG, (str(tenants.a),))
        conn.commit()
    assert _fetch_one(conn, COUNT) == 0
    conn.rollback()
    before = b_rows(db, tenants)
    assert_refused(
        conn,
        "INSERT INTO cmis.platform_connections (org_id, platform, account_id)"
        " VALUES (%s, 'meta', 'x')",
        (tenants.a,),
    )
    for call, params in (
        ("SELECT * FROM cmis.upsert_platform_connection(%s, 'meta', 'shared')", (tenants.a,)),
        ("SELECT * FROM cmis.soft_delete_platform_connection(%s, %s)", (tenants.a, tenants.a_live)),
        ("SELECT * FROM cmis.restore_platform_connection(%s, %s)", (tenants.a, tenants.a_live)),
        ("SELECT cmis.purge_platform_connections(%s, interval '0')", (tenants.a,)),
    ):
        message = assert_refused(conn, call, params)
        assert "app.current_org_id is not set" in message, message
    assert b_rows(db, tenants) == before


def test_a_malformed_org_setting_is_a_clear_error(tenants, as_a):
    as_a.execute(SET_ORG, ("not-a-uuid",))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="must be an organisation"):
        as_a.execute("SELECT * FROM cmis.upsert_platform_connection(%s, 'meta', 'x')", (tenants.a,))


# --- What the role cannot do --------------------------------------------------

FORBIDDEN = [
    "TRUNCATE cmis.platform_connections",
    "ALTER TABLE cmis.platform_connections ADD COLUMN x int",
    "ALTER TABLE cmis.platform_connections DISABLE ROW LEVEL SECURITY",
    "DROP POLICY platform_connections_org_isolation ON cmis.platform_connections",
    "ALTER POLICY platform_connections_org_isolation ON cmis.platform_connections USING (true)",
    "CREATE POLICY mine ON cmis.platform_connections USING (true)",
    "DROP TABLE cmis.platform_connections",
    "CREATE INDEX ON cmis.platform_connections (account_name)",
    "CREATE TABLE cmis.planted (x int)",
    "DROP FUNCTION cmis.purge_platform_connections(uuid, interval)",
    "CREATE OR REPLACE FUNCTION cmis.assert_platform_connection_org_scope(p_org_id uuid)"
    " RETURNS void LANGUAGE sql AS ''",
    "SELECT name FROM cmis.orgs",
    "INSERT INTO cmis.orgs (org_id) VALUES (gen_random_uuid())",
    "SELECT * FROM cmis.cmis_repo_undo",
    "ALTER ROLE cmis_app LOGIN BYPASSRLS",
    "CREATE ROLE planted LOGIN",
]


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_the_application_role_cannot(connect_as_app, tenants, statement):
    conn = connect_as_app()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_the_application_role_cannot_switch_row_security_off(connect_as_app, tenants):
    """row_security = off makes a query that a policy would filter fail, not see more."""
    conn = connect_as_app()
    conn.execute("SET row_security = off")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        conn.execute(COUNT)


# --- The owner, and FORCE -----------------------------------------------------


@pytest.fixture
def owner_login(db: Conn, conninfo: str) -> Iterator[Callable[[], Conn]]:
    """A login role that owns cmis.platform_connections (not a superuser)."""
    role = f"cmis_test_owner_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA cmis TO {}").format(ident))
    db.execute(sql.SQL("ALTER TABLE cmis.platform_connections OWNER TO {}").format(ident))
    db.commit()
    opened: list[Conn] = []

    def connect() -> Conn:
        conn = psycopg.connect(conninfo, user=role)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()
    db.rollback()
    db.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(ident))
    db.execute(sql.SQL("DROP OWNED BY {}").format(ident))
    db.execute(sql.SQL("DROP ROLE {}").format(ident))
    db.commit()


def test_the_owner_bypasses_row_level_security_unless_forced(db, tenants, owner_login):
    owner = owner_login()
    assert _fetch_one(owner, COUNT) == 4  # every org's rows, no org set
    owner.rollback()
    owner.execute("ALTER TABLE cmis.platform_connections FORCE ROW LEVEL SECURITY")
    owner.commit()
    assert _fetch_one(owner, COUNT) == 0
    owner.execute(SET_ORG, (str(tenants.a),))
    assert _fetch_one(owner, COUNT) == 2
    owner.rollback()
