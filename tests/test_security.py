"""Secrets stay out of repr, logs and errors; the functions run with the caller's rights.

Row-level security is proven in test_tenant_isolation.py, as a non-superuser.
"""

from __future__ import annotations

import logging
import traceback

import pytest

from cmis_repo import (
    PlatformConnectionRepository,
    RepositoryError,
)

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
    assert len(rows) == 7
    for name, security_definer, config in rows:
        assert not security_definer, f"{name} must not bypass row-level security"
        assert config, f"{name} has no SET clause"
        assert any(c.startswith("search_path=") for c in config), name
