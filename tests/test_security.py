"""Secrets stay out of repr, logs and errors; row-level security still applies."""

from __future__ import annotations

import logging
import traceback
import uuid

import psycopg
import pytest
from psycopg import sql

from cmis_repo import (
    PermissionDeniedError,
    PlatformConnectionRepository,
    RepositoryError,
)
from tests.conftest import make_org

ACCESS = "EAAB-access-token-do-not-leak"
REFRESH = "refresh-token-do-not-leak"


def assert_no_secret(text: str) -> None:
    assert ACCESS not in text
    assert REFRESH not in text


def test_tokens_are_not_in_repr_or_str(db, org_id):
    result = PlatformConnectionRepository(db).upsert(
        org_id, "meta", "a", access_token=ACCESS, refresh_token=REFRESH
    )
    assert result.connection.access_token == ACCESS  # stored and returned...
    for text in (repr(result), str(result), repr(result.connection), str(result.connection)):
        assert_no_secret(text)  # ...but never shown
    assert "access_token" not in repr(result.connection)


def test_tokens_are_not_in_logs(db, org_id, caplog):
    caplog.set_level(logging.DEBUG)
    repo = PlatformConnectionRepository(db)
    row = repo.upsert(org_id, "meta", "a", access_token=ACCESS, refresh_token=REFRESH).connection
    repo.soft_delete(org_id, row.connection_id)
    repo.upsert(org_id, "meta", "a", access_token=ACCESS)
    assert caplog.records, "the repository logs its writes at DEBUG"
    assert_no_secret(caplog.text)


def test_tokens_are_not_in_database_errors(db, org_id):
    """PostgreSQL's DETAIL for a failing row lists every value; the error must not carry it."""
    # A NOT NULL column of the app's own that our INSERT does not fill.
    db.execute("ALTER TABLE cmis.platform_connections ADD COLUMN tenant_ref text NOT NULL")
    with pytest.raises(RepositoryError) as caught:
        PlatformConnectionRepository(db).upsert(
            org_id, "meta", "a", access_token=ACCESS, refresh_token=REFRESH
        )
    error = caught.value
    assert error.sqlstate == "23502"
    assert "tenant_ref" in str(error)
    formatted = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), formatted, str(error.args)):
        assert_no_secret(text)


def test_tokens_are_not_in_bad_input_errors(db, org_id):
    with pytest.raises(RepositoryError) as caught:
        PlatformConnectionRepository(db).upsert(
            org_id, "Meta Ads", "a", access_token=ACCESS, refresh_token=REFRESH
        )
    assert_no_secret(str(caught.value))
    assert_no_secret("".join(traceback.format_exception(caught.value)))


def test_functions_run_with_the_callers_rights_and_a_pinned_search_path(db):
    rows = db.execute(
        """SELECT p.proname, p.prosecdef, p.proconfig
             FROM pg_proc p WHERE p.pronamespace = 'cmis'::regnamespace"""
    ).fetchall()
    assert len(rows) == 4
    for name, security_definer, config in rows:
        assert not security_definer, f"{name} must not bypass row-level security"
        assert config, f"{name} has no SET clause"
        assert any(c.startswith("search_path=") for c in config), name


@pytest.fixture
def app_role(db, conninfo):
    """A login role without BYPASSRLS, like the Laravel app's, and RLS forced on the table."""
    role = f"cmis_app_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA cmis TO {}").format(ident))
    db.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA cmis TO {}").format(ident)
    )
    db.execute("ALTER TABLE cmis.platform_connections ENABLE ROW LEVEL SECURITY")
    db.execute("ALTER TABLE cmis.platform_connections FORCE ROW LEVEL SECURITY")
    db.execute(
        """CREATE POLICY org_isolation ON cmis.platform_connections
               USING (org_id = current_setting('app.current_org_id', true)::uuid)
               WITH CHECK (org_id = current_setting('app.current_org_id', true)::uuid)"""
    )
    db.commit()
    yield role
    db.rollback()
    db.execute(sql.SQL("DROP OWNED BY {}").format(ident))
    db.execute(sql.SQL("DROP ROLE {}").format(ident))
    db.commit()


def test_row_level_security_applies_to_the_functions(db, conninfo, app_role):
    mine, theirs = make_org(db, "Mine"), make_org(db, "Theirs")
    with psycopg.connect(conninfo, user=app_role) as conn:
        conn.execute("SELECT set_config('app.current_org_id', %s, false)", (str(theirs),))
        their_row = PlatformConnectionRepository(conn).upsert(theirs, "meta", "t").connection
        conn.commit()

        conn.execute("SELECT set_config('app.current_org_id', %s, false)", (str(mine),))
        repo = PlatformConnectionRepository(conn)
        row = repo.upsert(mine, "meta", "a", access_token=ACCESS).connection
        assert repo.soft_delete(mine, row.connection_id)
        assert repo.upsert(mine, "meta", "a").connection.connection_id == row.connection_id
        conn.commit()

        # Another org's rows are invisible: nothing to delete, nothing to read.
        assert repo.soft_delete(theirs, their_row.connection_id) is False
        assert repo.get(theirs, their_row.connection_id) is None
        # Writing under another org's id is refused by the policy, and nothing is written.
        with pytest.raises(PermissionDeniedError) as caught:
            repo.upsert(theirs, "google", "sneaky", access_token=ACCESS)
        assert caught.value.sqlstate == "42501"
        assert_no_secret(str(caught.value))
        conn.rollback()

    count = db.execute(
        "SELECT count(*) FROM cmis.platform_connections WHERE account_id = 'sneaky'"
    ).fetchone()[0]
    assert count == 0
