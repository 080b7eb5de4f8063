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
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from cmis_repo import (
    STATUSES,
    InvalidInputError,
    Outcome,
    PlatformConnectionRepository,
    RepositoryError,
    UnknownOrganisationError,
)
from cmis_repo.queries import query

#: The key of the live row every bad call aims at unless it changes a key part.
LIVE_ACCOUNT = "act_live"
#: The key of a soft-deleted row: a bad call must not restore it.
DELETED_ACCOUNT = "act_deleted"

#: Stands for "an org_id that is not in cmis.orgs" in the table below.
UNKNOWN_ORG = object()

#: The repository's own statement (cmis_repo/queries.sql), run directly.
UPSERT_SQL = query("upsert")
#: Arguments the table below never sets.
UNSET = {"token_expires_at": None, "scopes": None, "account_metadata": None, "auto_sync": None}

SNAPSHOT_SQL = "SELECT * FROM cmis.platform_connections ORDER BY connection_id"


@dataclass(frozen=True)
class Call:
    """One call's arguments; a case changes some of them."""

    # Any: the table passes None where the repository's signature says str.
    org_id: Any = None
    platform: Any = "meta"
    account_id: Any = LIVE_ACCOUNT
    account_name: str | None = None
    status: str | None = "active"
    sync_frequency_minutes: int | None = None


BAD_INPUTS = [
    # (changes to a good call, SQLSTATE, the argument the message must name)
    pytest.param({"org_id": None}, "22004", "p_org_id", id="org-null"),
    pytest.param({"org_id": UNKNOWN_ORG}, "23503", "p_org_id", id="org-unknown"),
    pytest.param({"platform": None}, "22004", "p_platform", id="platform-null"),
    pytest.param({"platform": ""}, "22023", "p_platform", id="platform-empty"),
    pytest.param({"platform": "   "}, "22023", "p_platform", id="platform-spaces"),
    pytest.param({"platform": "\t"}, "22023", "p_platform", id="platform-tab"),
    pytest.param({"platform": "Meta"}, "22023", "p_platform", id="platform-Meta"),
    pytest.param({"platform": "meta ads"}, "22023", "p_platform", id="platform-meta-space-ads"),
    pytest.param({"platform": "meta/ads"}, "22023", "p_platform", id="platform-meta-slash-ads"),
    pytest.param({"platform": " meta"}, "22023", "p_platform", id="platform-leading-space"),
    pytest.param({"platform": "meta\n"}, "22023", "p_platform", id="platform-trailing-newline"),
    pytest.param({"platform": "meta-"}, "22023", "p_platform", id="platform-trailing-dash"),
    pytest.param({"platform": "méta"}, "22023", "p_platform", id="platform-non-ascii"),
    pytest.param({"platform": "a" * 51}, "22001", "p_platform", id="platform-51-char-slug"),
    pytest.param({"account_id": None}, "22004", "p_account_id", id="account-null"),
    pytest.param({"account_id": ""}, "22023", "p_account_id", id="account-empty"),
    pytest.param({"account_id": "   "}, "22023", "p_account_id", id="account-spaces"),
    pytest.param({"account_id": "\t"}, "22023", "p_account_id", id="account-tab"),
    pytest.param({"account_id": " \n "}, "22023", "p_account_id", id="account-newline"),
    pytest.param({"account_id": " act_1"}, "22023", "p_account_id", id="account-leading-space"),
    pytest.param({"account_id": "act_1\t"}, "22023", "p_account_id", id="account-trailing-tab"),
    pytest.param({"account_id": "9" * 256}, "22001", "p_account_id", id="account-256-chars"),
    pytest.param({"account_id": "é" * 256}, "22001", "p_account_id", id="account-256-multibyte"),
    pytest.param({"account_name": "n" * 256}, "22001", "p_account_name", id="account-name-256"),
    pytest.param({"status": "paused"}, "22023", "p_status", id="status-paused"),
    pytest.param({"status": ""}, "22023", "p_status", id="status-empty"),
    pytest.param({"status": "ACTIVE"}, "22023", "p_status", id="status-ACTIVE"),
    pytest.param(
        {"status": "paused", "account_id": DELETED_ACCOUNT},
        "22023",
        "p_status",
        id="status-paused-on-deleted-key",
    ),
    pytest.param(
        {"sync_frequency_minutes": 0}, "22023", "p_sync_frequency_minutes", id="sync-frequency-0"
    ),
    pytest.param(
        {"sync_frequency_minutes": -5},
        "22023",
        "p_sync_frequency_minutes",
        id="sync-frequency-minus-5",
    ),
]

GOOD_EDGE_INPUTS = [
    pytest.param({"account_id": "9" * 255}, Outcome.CREATED, id="account-255-chars"),
    pytest.param({"account_id": "é" * 255}, Outcome.CREATED, id="account-255-multibyte"),
    pytest.param({"platform": "a" * 50}, Outcome.CREATED, id="platform-50-char-slug"),
    pytest.param({"platform": "google_ads"}, Outcome.CREATED, id="platform-underscore"),
    pytest.param({"platform": "meta-ads2"}, Outcome.CREATED, id="platform-dash-digit"),
    pytest.param({"account_name": "n" * 255}, Outcome.UPDATED, id="account-name-255"),
    pytest.param({"account_name": ""}, Outcome.UPDATED, id="account-name-empty"),
    pytest.param({"status": None}, Outcome.UPDATED, id="status-null-keeps"),
    pytest.param({"sync_frequency_minutes": 1}, Outcome.UPDATED, id="sync-frequency-1"),
    pytest.param({"account_id": DELETED_ACCOUNT}, Outcome.RESTORED, id="deleted-key-restored"),
    *(
        pytest.param({"status": status}, Outcome.UPDATED, id=f"status-{status}")
        for status in STATUSES
    ),
]


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
