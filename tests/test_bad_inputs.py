"""Bad inputs to cmis.upsert_platform_connection: SQLSTATE, nothing written, no secret leaked.

One table of bad inputs is run twice: as a direct SQL call through psycopg
(checking ``exc.sqlstate``) and through ``PlatformConnectionRepository.upsert``
(checking the mapped exception class, its ``.sqlstate`` and that its message
names the wrong argument). Either way the table must be exactly as before
(no row added, the row of the key untouched), and no error text may contain
the access or refresh token passed in the same call.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from cmis_repo import (
    InvalidInputError,
    PlatformConnectionRepository,
    RepositoryError,
    UnknownOrganisationError,
)
from cmis_repo.queries import query
from tests.support.inputs import (
    BAD_INPUTS,
    DELETED_ACCOUNT,
    GOOD_EDGE_INPUTS,
    LIVE_ACCOUNT,
    UNKNOWN_ORG,
    Call,
)

#: The repository's own statement (cmis_repo/queries.sql), run directly.
UPSERT_SQL = query("upsert")
#: Arguments the table below never sets.
UNSET = {"token_expires_at": None, "scopes": None, "account_metadata": None, "auto_sync": None}

SNAPSHOT_SQL = "SELECT * FROM cmis.platform_connections ORDER BY connection_id"


@pytest.fixture
def existing(db: psycopg.Connection[Any], org_id: uuid.UUID) -> dict[str, Any]:
    """A live row and a soft-deleted row of the org, committed."""
    repo = PlatformConnectionRepository(db)
    live = repo.upsert(
        org_id,
        "meta",
        LIVE_ACCOUNT,
        account_name="Acme Ads",
        status="warning",
        access_token="stored-access",
        refresh_token="stored-refresh",
        sync_frequency_minutes=30,
    )
    gone = repo.upsert(org_id, "meta", DELETED_ACCOUNT, access_token="stored-gone")
    assert repo.soft_delete(org_id, gone.connection.connection_id)
    db.commit()
    return {"live": live.connection, "deleted": gone.connection}


@pytest.fixture
def secrets() -> dict[str, str]:
    """Tokens passed with every bad call: no error text may contain them."""
    return {
        "access_token": f"access-SECRET-{uuid.uuid4().hex}",
        "refresh_token": f"refresh-SECRET-{uuid.uuid4().hex}",
    }


def _call(org_id: uuid.UUID, changes: dict[str, Any]) -> Call:
    arguments = {"org_id": org_id, **changes}
    if arguments["org_id"] is UNKNOWN_ORG:
        arguments["org_id"] = uuid.uuid4()
    return Call(**arguments)


def _snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(SNAPSHOT_SQL).fetchall()


def _assert_no_secret(texts: list[str | None], secrets: dict[str, str]) -> None:
    for text in texts:
        for name, secret in secrets.items():
            assert secret not in (text or ""), f"the error text contains the {name}: {text!r}"


@pytest.mark.parametrize(("changes", "sqlstate", "argument"), BAD_INPUTS)
def test_bad_input_through_sql(db, org_id, existing, secrets, changes, sqlstate, argument):
    call = _call(org_id, changes)
    before = _snapshot(db)
    db.commit()

    with pytest.raises(psycopg.Error) as caught:
        db.execute(UPSERT_SQL, {**UNSET, **call.__dict__, **secrets})
    db.rollback()
    error = caught.value

    assert error.sqlstate == sqlstate, f"{error.sqlstate}: {error.diag.message_primary}"
    assert argument in (error.diag.message_primary or "")
    diag = error.diag
    _assert_no_secret(
        [
            str(error),
            diag.message_primary,
            diag.message_detail,
            diag.message_hint,
            diag.context,
            diag.internal_query,
        ],
        secrets,
    )

    after = _snapshot(db)
    assert len(after) == len(before), "a bad call added or removed a row"
    assert after == before, "a bad call changed a row"


@pytest.mark.parametrize(("changes", "sqlstate", "argument"), BAD_INPUTS)
def test_bad_input_through_repository(db, org_id, existing, secrets, changes, sqlstate, argument):
    call = _call(org_id, changes)
    expected_class = UnknownOrganisationError if sqlstate == "23503" else InvalidInputError
    before = _snapshot(db)
    db.commit()
    repo = PlatformConnectionRepository(db)

    with pytest.raises(RepositoryError) as caught:
        repo.upsert(
            call.org_id,
            call.platform,
            call.account_id,
            account_name=call.account_name,
            status=call.status,
            sync_frequency_minutes=call.sync_frequency_minutes,
            **secrets,
        )
    db.rollback()
    error = caught.value

    assert type(error) is expected_class, f"{type(error).__name__}: {error}"
    assert error.sqlstate == sqlstate
    assert argument in error.message
    assert argument in str(error)
    _assert_no_secret([str(error), repr(error), error.message, error.hint], secrets)
    # The psycopg error (whose text may carry a DETAIL listing the row) is not
    # chained, not even as a suppressed __context__ that error trackers could walk.
    assert error.__cause__ is None
    assert error.__context__ is None

    after = _snapshot(db)
    assert len(after) == len(before), "a bad call added or removed a row"
    assert after == before, "a bad call changed a row"


@pytest.mark.parametrize(("changes", "outcome"), GOOD_EDGE_INPUTS)
def test_edge_values_that_fit_through_sql(db, org_id, existing, changes, outcome):
    call = _call(org_id, changes)
    row = db.execute(
        UPSERT_SQL, {**UNSET, **call.__dict__, "access_token": None, "refresh_token": None}
    ).fetchone()
    assert row is not None
    assert row[0] == outcome
    stored = db.execute(
        "SELECT platform, account_id, account_name, status FROM cmis.platform_connections"
        " WHERE connection_id = %s",
        (row[1],),
    ).fetchone()
    assert stored is not None
    assert stored[0] == call.platform
    assert stored[1] == call.account_id


@pytest.mark.parametrize(("changes", "outcome"), GOOD_EDGE_INPUTS)
def test_edge_values_that_fit_through_repository(db, org_id, existing, changes, outcome):
    call = _call(org_id, changes)
    result = PlatformConnectionRepository(db).upsert(
        call.org_id,
        call.platform,
        call.account_id,
        account_name=call.account_name,
        status=call.status,
        sync_frequency_minutes=call.sync_frequency_minutes,
    )
    assert result.outcome is outcome
    assert result.connection.platform == call.platform
    assert result.connection.account_id == call.account_id
    if call.account_name is not None:
        assert result.connection.account_name == call.account_name
    expected_status = existing["live"].status if call.status is None else call.status
    assert result.connection.status == expected_status
