"""The bulk call ``cmis.upsert_platform_connections(p_org_id, p_rows)`` and ``repo.upsert_many``.

What is proved here, against a real PostgreSQL server:

- **Equivalence with the single call.** One batch over keys in every state
  (live; deleted once; deleted several times, the newest not the last
  inserted; never seen; live with deleted history; the same account id under
  another platform and in another organisation), its elements leaving fields
  out, passing null, passing values. The single call is run element by element
  in one transaction, which is rolled back; the bulk call then runs on the same
  rows. Outcome, every returned column and the whole table afterwards must be
  the same, except ``updated_at`` (and, for a created row, its new
  ``connection_id`` and ``created_at``). The same through the repository,
  without a cipher and with a Laravel cipher (stored tokens are Laravel
  payloads, returned tokens are plaintext).
- **Order.** Results in input order, ``ord`` 1..n; an empty array returns
  nothing and writes nothing.
- **Bad input.** Every kind of bad element, at position 3 of 4: its SQLSTATE,
  a message naming the element, the table unchanged, the call refused before
  it waits for the organisation's lock (so before anything could be written),
  and, through the repository, the mapped exception with no token in its text.
- **Organisation scope** as the application's role: another org than the
  session's is refused (42501), the repository acts for the org it is given
  and touches only that org's rows, no org set is refused.
- **A 2,000-element batch** over every state: outcome counts, the newest
  deleted row restored, exactly one live row per key.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cmis_repo import (
    ConnectionInput,
    InvalidInputError,
    LaravelEncrypter,
    Outcome,
    PlatformConnectionRepository,
    RepositoryError,
    UnknownOrganisationError,
    UpsertResult,
)
from tests.support.inputs import BAD_INPUTS as SINGLE_BAD_INPUTS
from tests.support.inputs import GOOD_EDGE_INPUTS as SINGLE_GOOD_EDGE_INPUTS
from tests.support.inputs import Call
from tests.support.orgs import make_org

Conn = psycopg.Connection[Any]

BULK_SQL = "SELECT * FROM cmis.upsert_platform_connections(%s::uuid, %s::jsonb)"
SET_ORG = "SELECT set_config('app.current_org_id', %s, true)"
SNAPSHOT_SQL = "SELECT * FROM cmis.platform_connections ORDER BY connection_id"

#: The optional fields of an element and the SQL type of the single call's argument.
OPTIONAL_ARGUMENTS = {
    "account_name": "text",
    "status": "text",
    "access_token": "text",
    "refresh_token": "text",
    "token_expires_at": "timestamptz",
    "scopes": "jsonb",
    "account_metadata": "jsonb",
    "auto_sync": "bool",
    "sync_frequency_minutes": "int4",
}
TOKEN_FIELDS = ("access_token", "refresh_token")
#: Columns that differ between two runs of the same batch however correct it is.
ALWAYS_DIFFERENT = {"updated_at"}
#: ... and, for a row the call created, also these.
DIFFERENT_WHEN_CREATED = {"connection_id", "created_at"}

NOW = datetime.now(UTC).replace(microsecond=0)


def new_key() -> str:
    return "base64:" + base64.b64encode(os.urandom(32)).decode()


# --------------------------------------------------------------------------
# The rows every equivalence test starts from: one key in each state.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    org_id: uuid.UUID
    other_org_id: uuid.UUID
    #: connection ids by name (see seed()).
    ids: dict[str, uuid.UUID]
    #: plaintext of every stored token by connection id and column.
    tokens: dict[tuple[uuid.UUID, str], str]
    #: the stored token values (payloads when a cipher is used), same keys.
    stored_tokens: dict[tuple[uuid.UUID, str], str]


class SeedRow(NamedTuple):
    name: str
    platform: str
    account_id: str
    #: days ago; None for a live row
    deleted_days: float | None
    created_days: int
    values: dict[str, Any]


SEED_ROWS: list[SeedRow] = [
    # live
    SeedRow(
        "live",
        "meta",
        "act_live",
        None,
        30,
        {
            "account_name": "Live account",
            "status": "warning",
            "scopes": ["ads_read"],
            "account_metadata": {"currency": "USD"},
            "auto_sync": False,
            "sync_frequency_minutes": 30,
            "last_error_message": "rate limited",
        },
    ),
    # deleted only, once
    SeedRow("deleted", "meta", "act_deleted", 2, 40, {"account_name": "Gone", "status": "revoked"}),
    # deleted several times: the newest deletion is neither the first nor the last row inserted
    SeedRow(
        "hist_old", "meta", "act_history", 9, 90, {"account_name": "Oldest", "status": "error"}
    ),
    SeedRow(
        "hist_newest", "meta", "act_history", 1, 60, {"account_name": "Newest", "status": "expired"}
    ),
    SeedRow(
        "hist_mid", "meta", "act_history", 5, 70, {"account_name": "Middle", "status": "pending"}
    ),
    # live with deleted history
    SeedRow("lh_live", "google", "g_1", None, 20, {"account_name": "G live", "scopes": {"a": 1}}),
    SeedRow("lh_dead", "google", "g_1", 3, 50, {"account_name": "G dead"}),
    # the same account id under another platform: another key, deleted
    SeedRow("other_platform", "tiktok", "act_live", 4, 45, {"account_name": "TikTok"}),
]
#: The other organisation's row with the key of "live": never touched.
OTHER_ORG_ROW = ("meta", "act_live")

#: The batch: every key state, fields left out, null, or given. Keys are in no sorted order.
BATCH: list[dict[str, Any]] = [
    # restore the newest of three deleted rows; status left out -> 'active'
    {
        "platform": "meta",
        "account_id": "act_history",
        "account_name": "Renamed",
        "access_token": "new-access-history",
        "scopes": ["ads_read", "ads_management"],
    },
    # update the live row; status null keeps 'warning'; nulls keep; false and numbers are set
    {
        "platform": "meta",
        "account_id": "act_live",
        "status": None,
        "account_name": None,
        "access_token": None,
        "refresh_token": "new-refresh-live",
        "auto_sync": True,
        "sync_frequency_minutes": 60,
        "token_expires_at": "2030-01-01T00:00:00+00:00",
        "account_metadata": {"currency": "EUR"},
    },
    # no row: created with the defaults
    {"platform": "linkedin", "account_id": "li_new"},
    # restore the only deleted row; an explicit status; nulls keep
    {
        "platform": "meta",
        "account_id": "act_deleted",
        "status": "expired",
        "refresh_token": "new-refresh-deleted",
        "token_expires_at": None,
        "scopes": None,
        "auto_sync": False,
    },
    # live row with deleted history: the live one is updated, the history untouched
    {"platform": "google", "account_id": "g_1", "status": "pending", "access_token": None},
    # the same account id under another platform: that key's own deleted row is restored
    {
        "platform": "tiktok",
        "account_id": "act_live",
        "account_name": "TikTok again",
        "status": "active",
        "access_token": "new-access-tiktok",
        "refresh_token": "new-refresh-tiktok",
        "token_expires_at": "2031-06-30T12:30:00+02:00",
        "scopes": ["video"],
        "account_metadata": {"nested": {"x": [1, 2]}},
        "auto_sync": True,
        "sync_frequency_minutes": 5,
    },
    # created with status null (-> 'active') and every other field given
    {
        "platform": "google_ads",
        "account_id": "123-456-7890",
        "account_name": "Ads",
        "status": None,
        "access_token": "new-access-ads",
        "scopes": [],
        "account_metadata": {},
        "auto_sync": False,
        "sync_frequency_minutes": 1,
    },
]
EXPECTED_OUTCOMES = ["restored", "updated", "created", "restored", "updated", "restored", "created"]


def seed(db: Conn, org_id: uuid.UUID, cipher: LaravelEncrypter | None = None) -> Seeded:
    """Insert SEED_ROWS (as the superuser, values given explicitly) and commit."""
    other_org_id = make_org(db, "Other")
    ids: dict[str, uuid.UUID] = {}
    tokens: dict[tuple[uuid.UUID, str], str] = {}
    stored_tokens: dict[tuple[uuid.UUID, str], str] = {}
    rows = [(org_id, row) for row in SEED_ROWS]
    rows.append(
        (other_org_id, SeedRow("other_org", *OTHER_ORG_ROW, None, 10, {"account_name": "B"}))
    )
    for org, (name, platform, account_id, deleted_days, created_days, values) in rows:
        connection_id = uuid.uuid4()
        ids[name] = connection_id
        plain = {column: f"stored-{column}-{name}" for column in TOKEN_FIELDS}
        sealed = {c: cipher.encrypt(v) if cipher else v for c, v in plain.items()}
        for column in TOKEN_FIELDS:
            tokens[(connection_id, column)] = plain[column]
            stored_tokens[(connection_id, column)] = sealed[column]
        created = NOW - timedelta(days=created_days)
        db.execute(
            """
            INSERT INTO cmis.platform_connections (
                connection_id, org_id, platform, account_id, account_name, status,
                access_token, refresh_token, token_expires_at, scopes, account_metadata,
                last_sync_at, last_error_at, last_error_message, auto_sync,
                sync_frequency_minutes, created_at, updated_at, deleted_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                connection_id,
                org,
                platform,
                account_id,
                values.get("account_name"),
                values.get("status", "active"),
                sealed["access_token"],
                sealed["refresh_token"],
                created + timedelta(days=60),
                Jsonb(values["scopes"]) if "scopes" in values else None,
                Jsonb(values["account_metadata"]) if "account_metadata" in values else None,
                created + timedelta(days=1),
                created + timedelta(days=2),
                values.get("last_error_message"),
                values.get("auto_sync", True),
                values.get("sync_frequency_minutes", 15),
                created,
                created + timedelta(hours=1),
                None if deleted_days is None else NOW - timedelta(days=deleted_days),
            ),
        )
    db.commit()
    return Seeded(org_id, other_org_id, ids, tokens, stored_tokens)


# --------------------------------------------------------------------------
# Running a batch: element by element (single call) or in one bulk call.
# --------------------------------------------------------------------------


def single_call_sql(org_id: uuid.UUID, element: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The single call for one element: absent fields left out (the default), null passed."""
    arguments = [
        "p_org_id => %(org_id)s::uuid",
        "p_platform => %(platform)s::text",
        "p_account_id => %(account_id)s::text",
    ]
    params: dict[str, Any] = {
        "org_id": org_id,
        "platform": element["platform"],
        "account_id": element["account_id"],
    }
    for name, sql_type in OPTIONAL_ARGUMENTS.items():
        if name in element:
            arguments.append(f"p_{name} => %({name})s::{sql_type}")
            value = element[name]
            params[name] = Jsonb(value) if sql_type == "jsonb" and value is not None else value
    return (
        f"SELECT * FROM cmis.upsert_platform_connection({', '.join(arguments)})",
        params,
    )


def run_singles(db: Conn, org_id: uuid.UUID, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for element in batch:
        statement, params = single_call_sql(org_id, element)
        with db.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(statement, params).fetchall()
        assert len(rows) == 1
        results.append(rows[0])
    return results


def run_bulk(db: Conn, org_id: uuid.UUID, batch: Any) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(BULK_SQL, (org_id, Jsonb(batch))).fetchall()


def comparable(row: dict[str, Any], created_ids: set[uuid.UUID]) -> dict[str, Any]:
    """A result or table row without what legitimately differs between two runs."""
    values = dict(row)
    values.pop("ord", None)
    created = values.get("outcome") == "created" or values["connection_id"] in created_ids
    for column in ALWAYS_DIFFERENT | (DIFFERENT_WHEN_CREATED if created else set()):
        values.pop(column)
    return values


def table_state(db: Conn, seeded: Seeded) -> list[dict[str, Any]]:
    """Every row (both orgs) in a run-independent order, created rows without their ids."""
    seeded_ids = set(seeded.ids.values())
    with db.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(SNAPSHOT_SQL).fetchall()
    created = {row["connection_id"] for row in rows} - seeded_ids
    state = [comparable(row, created) for row in rows]
    return sorted(
        state,
        key=lambda r: (
            str(r["org_id"]),
            r["platform"],
            r["account_id"],
            str(r.get("connection_id")),
        ),
    )


# --------------------------------------------------------------------------
# 1. Equivalence with the single call.
# --------------------------------------------------------------------------


def test_the_batch_covers_every_state():
    """The fixture is what the docstring says: guard against a batch that proves less."""
    assert sorted(Counter(EXPECTED_OUTCOMES).items()) == [
        ("created", 2),
        ("restored", 3),
        ("updated", 2),
    ]
    assert any("status" not in e for e in BATCH)
    assert any("status" in e and e["status"] is None for e in BATCH)
    assert any(any(v is None for k, v in e.items() if k != "status") for e in BATCH)
    keys = [(e["platform"], e["account_id"]) for e in BATCH]
    assert keys != sorted(keys)
    assert len(set(keys)) == len(keys)


def test_bulk_equals_single_calls_element_by_element_through_sql(db, org_id):
    seeded = seed(db, org_id)

    singles = run_singles(db, org_id, BATCH)
    table_after_singles = table_state(db, seeded)
    db.rollback()
    assert table_state(db, seeded) != table_after_singles  # the rollback undid them
    bulk = run_bulk(db, org_id, BATCH)
    table_after_bulk = table_state(db, seeded)
    db.commit()

    assert [r["outcome"] for r in singles] == EXPECTED_OUTCOMES
    assert [r["outcome"] for r in bulk] == EXPECTED_OUTCOMES
    assert [r["ord"] for r in bulk] == list(range(1, len(BATCH) + 1))
    for position, (single, many) in enumerate(zip(singles, bulk, strict=True), start=1):
        assert comparable(many, set()) == comparable(single, set()), f"element {position}"
        if many["outcome"] == "created":
            assert many["created_at"] == many["updated_at"]
            assert many["connection_id"] not in seeded.ids.values()
        else:
            assert many["updated_at"] > many["created_at"]
    assert table_after_bulk == table_after_singles

    # The semantics themselves, so that two runs agreeing on a wrong answer fail too.
    by_key = {(r["platform"], r["account_id"]): r for r in bulk}
    history = by_key[("meta", "act_history")]
    assert history["connection_id"] == seeded.ids["hist_newest"]
    assert history["created_at"] == NOW - timedelta(days=60)
    assert (history["status"], history["account_name"]) == ("active", "Renamed")
    assert history["refresh_token"] == "stored-refresh_token-hist_newest"  # absent: kept
    live = by_key[("meta", "act_live")]
    assert live["connection_id"] == seeded.ids["live"]
    assert (live["status"], live["account_name"]) == ("warning", "Live account")  # null: kept
    assert live["access_token"] == "stored-access_token-live"
    assert (live["auto_sync"], live["sync_frequency_minutes"]) == (True, 60)
    assert live["last_error_message"] == "rate limited"
    assert live["scopes"] == ["ads_read"]
    created = by_key[("linkedin", "li_new")]
    assert (created["status"], created["auto_sync"], created["sync_frequency_minutes"]) == (
        "active",
        True,
        15,
    )
    assert created["access_token"] is None
    deleted = by_key[("meta", "act_deleted")]
    assert (deleted["connection_id"], deleted["status"], deleted["auto_sync"]) == (
        seeded.ids["deleted"],
        "expired",
        False,
    )
    assert by_key[("google", "g_1")]["connection_id"] == seeded.ids["lh_live"]
    assert by_key[("tiktok", "act_live")]["connection_id"] == seeded.ids["other_platform"]
    assert by_key[("google_ads", "123-456-7890")]["status"] == "active"
    with db.cursor(row_factory=dict_row) as cur:
        state = {
            r["connection_id"]: r
            for r in cur.execute("SELECT * FROM cmis.platform_connections").fetchall()
        }
    for name in ("hist_old", "hist_mid", "lh_dead"):
        assert state[seeded.ids[name]]["deleted_at"] is not None, name
    other = state[seeded.ids["other_org"]]
    assert other["updated_at"] == NOW - timedelta(days=10) + timedelta(hours=1)
    assert sum(1 for r in state.values() if r["deleted_at"] is None) == 8


def to_input(element: dict[str, Any]) -> ConnectionInput:
    fields = dict(element)
    if fields.get("token_expires_at") is not None:
        fields["token_expires_at"] = datetime.fromisoformat(fields["token_expires_at"])
    return ConnectionInput(**fields)


def single_through_repo(
    repo: PlatformConnectionRepository, org_id: uuid.UUID, element: dict[str, Any]
) -> UpsertResult:
    row = to_input(element)
    kwargs = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    return repo.upsert(org_id, kwargs.pop("platform"), kwargs.pop("account_id"), **kwargs)


@pytest.mark.parametrize("with_cipher", [False, True], ids=["no-cipher", "laravel-cipher"])
def test_bulk_equals_single_calls_through_the_repository(db, org_id, with_cipher):
    key = new_key()
    cipher = LaravelEncrypter(key) if with_cipher else None
    seeded = seed(db, org_id, cipher)
    repo = PlatformConnectionRepository(db, cipher=cipher)

    singles = [single_through_repo(repo, org_id, element) for element in BATCH]
    db.rollback()
    many = repo.upsert_many(org_id, (to_input(element) for element in BATCH))  # any iterable
    db.commit()

    assert [r.outcome for r in many] == [Outcome(o) for o in EXPECTED_OUTCOMES]
    assert [(r.connection.platform, r.connection.account_id) for r in many] == [
        (e["platform"], e["account_id"]) for e in BATCH
    ]
    for position, (single, bulk) in enumerate(zip(singles, many, strict=True), start=1):
        assert bulk.outcome is single.outcome, f"element {position}"
        assert comparable(
            {"outcome": bulk.outcome, **dataclasses.asdict(bulk.connection)}, set()
        ) == comparable(
            {"outcome": single.outcome, **dataclasses.asdict(single.connection)}, set()
        ), f"element {position}"

    # Returned tokens are plaintext: the new ones given, the kept ones decrypted.
    reader = LaravelEncrypter(key)  # the app, with the same APP_KEY
    for element, result in zip(BATCH, many, strict=True):
        row = result.connection
        stored = db.execute(
            "SELECT access_token, refresh_token FROM cmis.platform_connections"
            " WHERE connection_id = %s",
            (row.connection_id,),
        ).fetchone()
        assert stored is not None
        for column, payload in zip(TOKEN_FIELDS, stored, strict=True):
            returned = getattr(row, column)
            given = element.get(column)
            if given is not None:
                expected = given
            elif result.outcome is Outcome.CREATED:
                expected = None
            else:
                expected = seeded.tokens[(row.connection_id, column)]
                # Kept: the very payload stored before, not re-encrypted.
                assert payload == seeded.stored_tokens[(row.connection_id, column)]
            assert returned == expected, (element, column)
            if expected is None:
                assert payload is None
            elif with_cipher:
                assert payload != expected
                assert expected not in payload
                assert reader.decrypt(payload) == expected
                assert json.loads(base64.b64decode(payload)).keys() == {
                    "iv",
                    "value",
                    "mac",
                    "tag",
                }
            else:
                assert payload == expected


def test_bulk_restores_the_row_its_own_transaction_soft_deleted(db, org_id):
    """Disconnect then bulk-reconnect in one transaction: the same row comes back."""
    repo = PlatformConnectionRepository(db)
    first = repo.upsert_many(org_id, [ConnectionInput("meta", "a"), ConnectionInput("meta", "b")])
    db.commit()
    a_id = first[0].connection.connection_id
    assert repo.soft_delete(org_id, a_id)
    again = repo.upsert_many(org_id, [ConnectionInput("meta", "b"), ConnectionInput("meta", "a")])
    assert [(r.outcome, r.connection.connection_id) for r in again] == [
        (Outcome.UPDATED, first[1].connection.connection_id),
        (Outcome.RESTORED, a_id),
    ]
    db.commit()
    count = db.execute(
        "SELECT count(*) FROM cmis.platform_connections WHERE org_id = %s", (org_id,)
    ).fetchone()
    assert count == (2,)


# --------------------------------------------------------------------------
# 2. Order.
# --------------------------------------------------------------------------


def test_results_are_in_input_order_with_ord(db, org_id):
    seed(db, org_id)
    rng = random.Random(7)  # noqa: S311 - test data
    batch = [dict(e) for e in BATCH] + [
        {"platform": "meta", "account_id": f"act_{n:02d}"} for n in range(20)
    ]
    rng.shuffle(batch)
    assert batch != sorted(batch, key=lambda e: (e["platform"], e["account_id"]))

    rows = run_bulk(db, org_id, batch)  # no ORDER BY: the function's own order
    assert [r["ord"] for r in rows] == list(range(1, len(batch) + 1))
    assert [(r["platform"], r["account_id"]) for r in rows] == [
        (e["platform"], e["account_id"]) for e in batch
    ]
    db.rollback()
    results = PlatformConnectionRepository(db).upsert_many(org_id, map(to_input, batch))
    assert [(r.connection.platform, r.connection.account_id) for r in results] == [
        (e["platform"], e["account_id"]) for e in batch
    ]


def test_an_empty_batch_returns_nothing_and_writes_nothing(db, org_id):
    seeded = seed(db, org_id)
    before = table_state(db, seeded)
    assert run_bulk(db, org_id, []) == []
    assert PlatformConnectionRepository(db).upsert_many(org_id, []) == []
    assert PlatformConnectionRepository(db).upsert_many(org_id, iter(())) == []
    db.commit()
    assert table_state(db, seeded) == before


# --------------------------------------------------------------------------
# 3. Bad input.
# --------------------------------------------------------------------------

#: Tokens every element of a bad batch carries: no error text may contain them.
SECRETS = {
    "access_token": f"access-SECRET-{uuid.uuid4().hex}",
    "refresh_token": f"refresh-SECRET-{uuid.uuid4().hex}",
}
#: Elements 1, 2 and 4 of every bad batch: good, and each would write (restore, update, create).
GOOD_ELEMENTS: list[dict[str, Any]] = [
    {"platform": "meta", "account_id": "act_deleted", **SECRETS},
    {"platform": "meta", "account_id": "act_live", **SECRETS},
    {"platform": "meta", "account_id": "act_new", **SECRETS},
]
MISSING = object()


@dataclass(frozen=True)
class Bad:
    """One bad call. ``element`` replaces element 3; ``rows``, the whole p_rows;
    ``org``, p_org_id ("null" or "unknown"). ``repo`` gives element 3's
    ConnectionInput fields when the case can be expressed through the
    repository (None when it cannot)."""

    sqlstate: str
    says: tuple[str, ...]
    element: Any = MISSING
    rows: Any = MISSING
    org: str | None = None
    repo: dict[str, Any] | None = None


def element3(**fields: Any) -> dict[str, Any]:
    return {"platform": "meta", "account_id": "act_3", **SECRETS, **fields}


def without(name: str) -> dict[str, Any]:
    element = element3()
    del element[name]
    return element


E3 = "p_rows element 3 "


def case(name: str, sqlstate: str, *says: str, **fields: Any) -> Any:
    """A pytest.param of a Bad: its SQLSTATE, what its message must say, what it changes."""
    return pytest.param(Bad(sqlstate, says, **fields), id=name)


def bad_element(name: str, sqlstate: str, *says: str, to_repo: bool = False, **changes: Any) -> Any:
    """Element 3 is element3(**changes); the message must name it and say ``says``."""
    return case(
        name,
        sqlstate,
        E3,
        *says,
        element=element3(**changes),
        repo=changes if to_repo else None,
    )


BAD_CASES = [
    # p_rows and p_org_id themselves
    case("rows-object", "22023", "p_rows", "array", "object", rows=element3()),
    case("rows-string", "22023", "p_rows", "array", "string", rows="meta"),
    case("rows-sql-null", "22004", "p_rows", "NULL", rows=None),
    case("org-null", "22004", "p_org_id", "NULL", org="null", repo={}),
    case("org-unknown", "23503", "unknown organisation", "cmis.orgs", org="unknown", repo={}),
    # an element that is not an object
    case("elem-string", "22023", E3, "string", "not an object", element="meta"),
    case("elem-array", "22023", E3, "array", element=[element3()]),
    case("elem-json-null", "22023", E3, "null", element=None),
    case("elem-number", "22023", E3, "number", element=3),
    # unknown fields, named
    bad_element("unknown-field-typo", "22023", "unknown field", "acount_name", acount_name="x"),
    bad_element("unknown-field-p_", "22023", "unknown field", "p_platform", p_platform="meta"),
    # wrong JSON types
    bad_element("auto_sync-string", "22023", "auto_sync", "type", to_repo=True, auto_sync="true"),
    bad_element("auto_sync-number", "22023", "auto_sync", "type", to_repo=True, auto_sync=1),
    bad_element(
        "sync-string",
        "22023",
        "sync_frequency_minutes",
        "type",
        to_repo=True,
        sync_frequency_minutes="15",
    ),
    bad_element(
        "sync-boolean", "22023", "sync_frequency_minutes", "type", sync_frequency_minutes=True
    ),
    bad_element(
        "sync-float",
        "22023",
        "sync_frequency_minutes",
        to_repo=True,
        sync_frequency_minutes=1.5,
    ),
    bad_element(
        "sync-float-whole",
        "22023",
        "sync_frequency_minutes",
        to_repo=True,
        sync_frequency_minutes=1.0,
    ),
    bad_element(  # 22003 as the single call's integer argument (was 22023, "wrong type")
        "sync-beyond-int4",
        "22003",
        "sync_frequency_minutes",
        to_repo=True,
        sync_frequency_minutes=3_000_000_000,
    ),
    bad_element("platform-number", "22023", "platform", "type", to_repo=True, platform=5),
    bad_element("account-number", "22023", "account_id", "type", to_repo=True, account_id=42),
    bad_element("token-object", "22023", "access_token", "type", access_token={"t": 1}),
    bad_element("expires-number", "22023", "token_expires_at", "type", token_expires_at=1767225600),
    # NULL or missing key parts
    bad_element("platform-null", "22004", "platform", "NULL", to_repo=True, platform=None),
    case("platform-missing", "22004", E3, "platform", "NULL", element=without("platform")),
    bad_element("account-null", "22004", "account_id", "NULL", to_repo=True, account_id=None),
    case("account-missing", "22004", E3, "account_id", "NULL", element=without("account_id")),
    # blank, malformed
    bad_element("platform-empty", "22023", "platform", "blank", to_repo=True, platform=""),
    bad_element("platform-blank", "22023", "platform", "blank", to_repo=True, platform=" \t"),
    bad_element("platform-Meta", "22023", "platform", "slug", to_repo=True, platform="Meta"),
    bad_element("platform-meta-space-ads", "22023", "platform", "slug", platform="meta ads"),
    bad_element("account-blank", "22023", "account_id", "blank", to_repo=True, account_id="  "),
    bad_element(
        "account-leading-space",
        "22023",
        "account_id",
        "white space",
        to_repo=True,
        account_id=" act_3",
    ),
    bad_element(
        "account-trailing-newline", "22023", "account_id", "white space", account_id="act_3\n"
    ),
    # too long
    bad_element("platform-51", "22001", "platform", "51", to_repo=True, platform="a" * 51),
    bad_element("account-256", "22001", "account_id", "256", to_repo=True, account_id="9" * 256),
    bad_element("account-256-multibyte", "22001", "account_id", "256", account_id="é" * 256),
    bad_element(
        "account-name-256", "22001", "account_name", "256", to_repo=True, account_name="n" * 256
    ),
    # status
    bad_element("status-paused", "22023", "status", "paused", to_repo=True, status="paused"),
    bad_element("status-empty", "22023", "status", status=""),
    bad_element("status-ACTIVE", "22023", "status", "ACTIVE", status="ACTIVE"),
    # sync frequency
    bad_element(
        "sync-0",
        "22023",
        "sync_frequency_minutes",
        "positive",
        to_repo=True,
        sync_frequency_minutes=0,
    ),
    bad_element(
        "sync-minus-5",
        "22023",
        "sync_frequency_minutes",
        "positive",
        to_repo=True,
        sync_frequency_minutes=-5,
    ),
    # token_expires_at
    bad_element(
        "expires-text", "22007", "token_expires_at", "not a timestamp", token_expires_at="soon"
    ),
    bad_element(
        "expires-february-30", "22007", "token_expires_at", token_expires_at="2026-02-30T00:00:00Z"
    ),
    bad_element("expires-empty", "22007", "token_expires_at", token_expires_at=""),
    bad_element(
        "expires-unknown-time-zone",
        "22007",
        "token_expires_at",
        token_expires_at="2026-01-01 12:00 Mars/Olympus",
    ),
    # the same key twice: elements 2 and 4
    case(
        "duplicate-key", "22023", "p_rows elements 2 and 4", "act_live", rows="duplicate", repo={}
    ),
]


@pytest.fixture
def existing(db: Conn, org_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """A live row (act_live) and a deleted one (act_deleted), committed."""
    repo = PlatformConnectionRepository(db)
    live = repo.upsert(org_id, "meta", "act_live", status="warning", access_token="stored")
    gone = repo.upsert(org_id, "meta", "act_deleted")
    assert repo.soft_delete(org_id, gone.connection.connection_id)
    db.commit()
    return {"live": live.connection.connection_id, "deleted": gone.connection.connection_id}


def bad_batch(bad: Bad) -> Any:
    if bad.rows == "duplicate":
        return [*GOOD_ELEMENTS, dict(GOOD_ELEMENTS[1])]
    if bad.rows is not MISSING:
        return bad.rows
    third = element3() if bad.element is MISSING else bad.element
    return [*GOOD_ELEMENTS[:2], third, GOOD_ELEMENTS[2]]


def bad_org(bad: Bad, org_id: uuid.UUID) -> uuid.UUID | None:
    if bad.org == "null":
        return None
    if bad.org == "unknown":
        return uuid.uuid4()
    return org_id


def snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    rows = conn.execute(SNAPSHOT_SQL).fetchall()
    conn.commit()
    return rows


def assert_no_secret(texts: list[str | None]) -> None:
    for text in texts:
        for name, secret in SECRETS.items():
            assert secret not in (text or ""), f"the error text contains the {name}: {text!r}"


@pytest.fixture
def org_lock_holder(connect: Callable[..., Conn], org_id: uuid.UUID, existing: Any) -> Conn:
    """Another session in the middle of a good bulk call of the org: it holds the org's lock."""
    holder = connect()
    rows = run_bulk(holder, org_id, [{"platform": "meta", "account_id": "act_holder"}])
    assert [r["outcome"] for r in rows] == ["created"]
    return holder  # left open; closing it at teardown rolls it back


def test_the_lock_holder_blocks_a_good_bulk_call(db, org_id, org_lock_holder):
    """Control for the next test: a good call does wait for that session (and times out)."""
    db.execute("SET lock_timeout = '300ms'")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        run_bulk(db, org_id, GOOD_ELEMENTS)
    db.rollback()


@pytest.mark.parametrize("bad", BAD_CASES)
def test_bad_input_through_sql(db, org_id, existing, org_lock_holder, bad):
    before = snapshot(db)
    # Refused before the org's lock (so before any write): no waiting for org_lock_holder.
    db.execute("SET lock_timeout = '2s'")
    db.commit()
    batch = bad_batch(bad)

    with pytest.raises(psycopg.Error) as caught:
        db.execute(BULK_SQL, (bad_org(bad, org_id), None if batch is None else Jsonb(batch)))
    db.rollback()
    error = caught.value
    diag = error.diag

    assert error.sqlstate == bad.sqlstate, f"{error.sqlstate}: {diag.message_primary}"
    for part in bad.says:
        assert part in (diag.message_primary or ""), diag.message_primary
    assert_no_secret(
        [str(error), diag.message_primary, diag.message_detail, diag.message_hint, diag.context]
    )
    after = snapshot(db)
    assert len(after) == len(before), "a bad call added or removed a row"
    assert after == before, "a bad call changed a row"


REPO_CASES = [param for param in BAD_CASES if param.values[0].repo is not None]


@pytest.mark.parametrize("bad", REPO_CASES)
def test_bad_input_through_repository(db, org_id, existing, bad):
    expected_class = UnknownOrganisationError if bad.sqlstate == "23503" else InvalidInputError
    good = [ConnectionInput(**e) for e in GOOD_ELEMENTS]
    if bad.rows == "duplicate":
        rows = [*good, good[1]]
    else:
        rows = [*good[:2], ConnectionInput(**element3(**bad.repo)), good[2]]
    before = snapshot(db)
    repo = PlatformConnectionRepository(db)

    with pytest.raises(RepositoryError) as caught:
        repo.upsert_many(bad_org(bad, org_id), rows)  # type: ignore[arg-type]
    db.rollback()
    error = caught.value

    assert type(error) is expected_class, f"{type(error).__name__}: {error}"
    assert error.sqlstate == bad.sqlstate
    for part in bad.says:
        assert part in error.message
    assert_no_secret([str(error), repr(error), error.message, error.hint])
    assert error.__cause__ is None
    assert error.__context__ is None
    assert snapshot(db) == before


def test_the_first_bad_element_is_named(db, org_id, existing):
    batch = [*GOOD_ELEMENTS[:2], element3(status="paused"), element3(account_id="", platform="x")]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        run_bulk(db, org_id, batch)
    assert (caught.value.diag.message_primary or "").startswith("p_rows element 3 status")


def test_bad_input_through_the_repository_with_a_cipher_leaks_no_token(db, org_id, existing):
    """With a cipher the payloads are secrets too: neither they nor the plaintexts show."""
    cipher = LaravelEncrypter(new_key())
    repo = PlatformConnectionRepository(db, cipher=cipher)
    rows = [ConnectionInput(**e) for e in GOOD_ELEMENTS]
    rows.insert(2, ConnectionInput(**element3(status="paused")))
    with pytest.raises(InvalidInputError) as caught:
        repo.upsert_many(org_id, rows)
    db.rollback()
    error = caught.value
    assert "p_rows element 3 status" in error.message
    assert_no_secret([str(error), repr(error), error.hint])
    assert "eyJ" not in str(error)  # no base64 JSON payload either


# --------------------------------------------------------------------------
# 4. Organisation scope, as the application's role.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenants:
    a: uuid.UUID
    b: uuid.UUID
    ids: dict[str, uuid.UUID]


@pytest.fixture
def tenants(db: Conn) -> Tenants:
    """Orgs A and B, each with a live meta/shared and a deleted meta/gone (superuser, committed)."""
    a, b = make_org(db, "A"), make_org(db, "B")
    ids = {}
    for org, name in ((a, "a"), (b, "b")):
        for account, deleted in (("shared", None), ("gone", NOW - timedelta(days=1))):
            row = db.execute(
                "INSERT INTO cmis.platform_connections"
                " (org_id, platform, account_id, access_token, deleted_at)"
                " VALUES (%s, 'meta', %s, %s, %s) RETURNING connection_id",
                (org, account, f"token-of-{name}", deleted),
            ).fetchone()
            assert row is not None
            ids[f"{name}_{account}"] = row[0]
    db.commit()
    return Tenants(a, b, ids)


def org_rows(db: Conn, org: uuid.UUID) -> list[tuple[Any, ...]]:
    """The org's rows as the superuser sees them (row-level security bypassed)."""
    db.rollback()
    return db.execute(
        "SELECT * FROM cmis.platform_connections WHERE org_id = %s ORDER BY connection_id", (org,)
    ).fetchall()


TENANT_BATCH: list[dict[str, Any]] = [
    {"platform": "meta", "account_id": "shared", "access_token": "x"},
    {"platform": "meta", "account_id": "gone"},
    {"platform": "meta", "account_id": "planted"},
]


def test_a_bulk_call_for_another_org_than_the_sessions_is_refused(db, tenants, connect_as_app):
    before_a, before_b = org_rows(db, tenants.a), org_rows(db, tenants.b)
    conn = connect_as_app()
    conn.execute(SET_ORG, (str(tenants.a),))
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        run_bulk(conn, tenants.b, TENANT_BATCH)
    conn.rollback()
    message = caught.value.diag.message_primary or ""
    assert str(tenants.a) in message
    assert str(tenants.b) in message
    assert "app.current_org_id" in message
    assert org_rows(db, tenants.a) == before_a
    assert org_rows(db, tenants.b) == before_b


def test_a_bulk_call_for_the_sessions_own_org_works_as_the_app_role(db, tenants, connect_as_app):
    conn = connect_as_app()
    conn.execute(SET_ORG, (str(tenants.a),))
    rows = run_bulk(conn, tenants.a, TENANT_BATCH)
    conn.commit()
    assert [(r["outcome"], r["org_id"]) for r in rows] == [
        ("updated", tenants.a),
        ("restored", tenants.a),
        ("created", tenants.a),
    ]
    assert rows[0]["connection_id"] == tenants.ids["a_shared"]
    assert rows[1]["connection_id"] == tenants.ids["a_gone"]


def test_the_repository_acts_for_the_org_it_is_given_and_touches_only_its_rows(
    db, tenants, connect_as_app
):
    before_a = org_rows(db, tenants.a)
    conn = connect_as_app()  # no org set: the repository sets B for its statement
    repo = PlatformConnectionRepository(conn)
    results = repo.upsert_many(tenants.b, [ConnectionInput(**e) for e in TENANT_BATCH])
    conn.commit()

    assert [(r.outcome, r.connection.org_id) for r in results] == [
        (Outcome.UPDATED, tenants.b),
        (Outcome.RESTORED, tenants.b),
        (Outcome.CREATED, tenants.b),
    ]
    assert results[0].connection.connection_id == tenants.ids["b_shared"]
    assert results[1].connection.connection_id == tenants.ids["b_gone"]
    assert org_rows(db, tenants.a) == before_a  # A's rows with the same keys: untouched
    b_now = org_rows(db, tenants.b)
    assert len(b_now) == 3
    assert {row[0] for row in b_now} == {r.connection.connection_id for r in results}


def test_a_bulk_call_with_no_org_set_is_refused(db, tenants, connect_as_app):
    before_a = org_rows(db, tenants.a)
    conn = connect_as_app()
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        run_bulk(conn, tenants.a, TENANT_BATCH)
    conn.rollback()
    assert "app.current_org_id is not set" in (caught.value.diag.message_primary or "")
    assert org_rows(db, tenants.a) == before_a


# --------------------------------------------------------------------------
# 5. A bigger batch.
# --------------------------------------------------------------------------


def test_a_2000_element_batch_over_every_state(db, org_id):
    """Keys i % 4: 0 live, 1 deleted only (every other one deleted twice), 2 live with a
    deleted row, 3 no row. 1000 updated, 500 restored (the newest), 500 created."""
    n = 2000
    # (which keys, deleted how long ago or NULL for live)
    for condition, deleted_at in (
        ("i %% 4 IN (0, 2)", None),
        ("i %% 4 = 1", "1 day"),
        ("i %% 8 = 1", "2 days"),
        ("i %% 4 = 2", "3 days"),
    ):
        db.execute(
            f"""
            INSERT INTO cmis.platform_connections
                   (org_id, platform, account_id, created_at, deleted_at)
            SELECT %(org)s, 'meta', 'acct_' || i, now() - interval '30 days',
                   now() - %(ago)s::interval
              FROM generate_series(0, %(n)s - 1) AS i
             WHERE {condition}
            """,
            {"org": org_id, "n": n, "ago": deleted_at},
        )
    newest_deleted = dict(
        db.execute(
            """
            SELECT DISTINCT ON (account_id) account_id, connection_id
              FROM cmis.platform_connections
             WHERE org_id = %s AND deleted_at IS NOT NULL
             ORDER BY account_id, deleted_at DESC
            """,
            (org_id,),
        ).fetchall()
    )
    rows_before = db.execute("SELECT count(*) FROM cmis.platform_connections").fetchone()
    assert rows_before is not None
    db.commit()
    expected = {0: "updated", 1: "restored", 2: "updated", 3: "created"}

    order = list(range(n))
    random.Random(2000).shuffle(order)  # noqa: S311
    batch = [
        {"platform": "meta", "account_id": f"acct_{i}", "account_name": f"name {i}"} for i in order
    ]
    rows = run_bulk(db, org_id, batch)
    db.commit()

    assert len(rows) == n
    assert [r["ord"] for r in rows] == list(range(1, n + 1))
    assert [r["account_id"] for r in rows] == [e["account_id"] for e in batch]
    assert Counter(r["outcome"] for r in rows) == {"updated": 1000, "restored": 500, "created": 500}
    for i, row in zip(order, rows, strict=True):
        assert row["outcome"] == expected[i % 4], row["account_id"]
        assert row["account_name"] == f"name {i}"
        assert row["deleted_at"] is None
        if i % 4 == 1:
            assert row["connection_id"] == newest_deleted[f"acct_{i}"], row["account_id"]
    per_key = db.execute(
        """
        SELECT count(*) FILTER (WHERE deleted_at IS NULL) AS live, count(*) AS keys
          FROM cmis.platform_connections WHERE org_id = %s
         GROUP BY account_id
        """,
        (org_id,),
    ).fetchall()
    assert len(per_key) == n
    assert {live for live, _ in per_key} == {1}
    rows_after = db.execute("SELECT count(*) FROM cmis.platform_connections").fetchone()
    assert rows_after == (rows_before[0] + 500,)
    assert len({r["connection_id"] for r in rows}) == n


# --------------------------------------------------------------------------
# 5. One definition of what is valid: the bulk call accepts and refuses exactly
#    what the single call does (the single call's table, tests/support/inputs.py).
# --------------------------------------------------------------------------


def _as_element(call: Call) -> dict[str, Any]:
    return {
        "platform": call.platform,
        "account_id": call.account_id,
        "account_name": call.account_name,
        "status": call.status,
        "sync_frequency_minutes": call.sync_frequency_minutes,
    }


#: p_org_id is the bulk call's own argument, with cases of its own (BAD_CASES).
ELEMENT_BAD_INPUTS = [
    p for p in SINGLE_BAD_INPUTS if "org_id" not in cast(dict[str, Any], p.values[0])
]


@pytest.mark.parametrize(("changes", "sqlstate", "argument"), ELEMENT_BAD_INPUTS)
def test_the_bulk_call_refuses_what_the_single_call_refuses(
    db, org_id, existing, changes, sqlstate, argument
):
    call = Call(org_id=org_id, **changes)
    with pytest.raises(psycopg.Error) as caught:
        run_bulk(db, org_id, [GOOD_ELEMENTS[0], _as_element(call)])
    db.rollback()
    message = caught.value.diag.message_primary or ""
    assert caught.value.sqlstate == sqlstate, message
    assert message.startswith("p_rows element 2 " + argument.removeprefix("p_")), message


@pytest.mark.parametrize(("changes", "outcome"), SINGLE_GOOD_EDGE_INPUTS)
def test_the_bulk_call_accepts_what_the_single_call_accepts(db, org_id, existing, changes, outcome):
    call = Call(org_id=org_id, **changes)
    [row] = run_bulk(db, org_id, [_as_element(call)])
    assert row["outcome"] == outcome.value
    assert (row["platform"], row["account_id"]) == (call.platform, call.account_id)
    if call.sync_frequency_minutes is not None:
        assert row["sync_frequency_minutes"] == call.sync_frequency_minutes


@pytest.mark.parametrize("minutes", [2**31, -(2**31) - 1, 10**30])
def test_a_sync_frequency_beyond_an_integer_is_out_of_range_and_named(db, org_id, minutes):
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as caught:
        run_bulk(
            db, org_id, [element3(), element3(account_id="a2", sync_frequency_minutes=minutes)]
        )
    assert (caught.value.diag.message_primary or "").startswith(
        "p_rows element 2 sync_frequency_minutes"
    )


@pytest.mark.parametrize(
    "field", ["platform", "account_id", "account_name", "status", "access_token", "refresh_token"]
)
@pytest.mark.parametrize("bad_text", ["a\x00b", "a\ud800b"], ids=["nul", "lone-surrogate"])
def test_text_no_database_can_store_is_refused_by_element_position(
    db, org_id, existing, field, bad_text
):
    good = [ConnectionInput(**e) for e in GOOD_ELEMENTS]
    bad = ConnectionInput(**{**element3(), field: bad_text})
    before = snapshot(db)
    with pytest.raises(InvalidInputError) as caught:
        PlatformConnectionRepository(db).upsert_many(org_id, [*good[:2], bad, good[2]])
    db.rollback()
    assert caught.value.message.startswith(f"p_rows element 3 {field}"), caught.value.message
    assert bad_text not in str(caught.value)
    assert snapshot(db) == before
