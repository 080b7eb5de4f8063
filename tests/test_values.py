"""What is stored can be read back; what cannot be stored is refused at the
door, nothing written (cmis_repo/values.py states the contract).

Seen: a psql user stored token_expires_at 'infinity' and scopes nested 1,500
deep; repo.list then raised for the whole organisation (a bare
RecursionError for the JSON), and repo.upsert of that key raised after its
write had committed. A lone surrogate from a request body was a bare
UnicodeEncodeError."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from cmis_repo import (
    ConnectionInput,
    InvalidInputError,
    LaravelEncrypter,
    Outcome,
    PlatformConnectionRepository,
)
from cmis_repo.values import END_OF_TIME, MAX_JSON_DEPTH, START_OF_TIME, UnparsedJson

STORED_TIMES = [
    pytest.param("infinity", END_OF_TIME, id="infinity"),
    pytest.param("-infinity", START_OF_TIME, id="minus-infinity"),
    pytest.param("10000-01-01 00:00:00+00", END_OF_TIME, id="year-10000"),
    pytest.param("0044-03-15 12:00:00+00 BC", START_OF_TIME, id="bc"),
    pytest.param(
        "9999-12-31 23:59:59+00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), id="year-9999"
    ),
]


def nested(depth: int) -> str:
    """A JSON document with an item at level ``depth`` (the document is level 0)."""
    return "[" * depth + "1" + "]" * depth


def nested_value(depth: int) -> Any:
    """The Python value of ``nested(depth)``, built without recursion."""
    value: list[Any] = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


def _store_around_the_functions(db, org_id, **values: str) -> uuid.UUID:
    """A live row whose columns were set by plain SQL (as psql or the app would)."""
    row = PlatformConnectionRepository(db).upsert(org_id, "meta", "act_odd").connection
    for column, value in values.items():
        db.execute(
            f"UPDATE cmis.platform_connections SET {column} = %s WHERE connection_id = %s",
            (value, row.connection_id),
        )
    db.commit()
    return row.connection_id


@pytest.mark.parametrize(("stored", "read"), STORED_TIMES)
def test_a_stored_timestamp_python_cannot_hold_reads_in_its_documented_form(
    db, connect, org_id, stored, read
):
    connection_id = _store_around_the_functions(db, org_id, token_expires_at=stored)
    conn = connect(autocommit=True)
    repo = PlatformConnectionRepository(conn)
    [row] = repo.list(org_id)
    assert row.token_expires_at == read
    got = repo.get(org_id, connection_id)
    assert got is not None
    assert got.token_expires_at == read
    # The upsert that keeps the value returns it too, and its write stands.
    result = repo.upsert(org_id, "meta", "act_odd", account_name="renamed")
    assert result.outcome is Outcome.UPDATED
    assert result.connection.token_expires_at == read
    [result] = repo.upsert_many(org_id, [ConnectionInput("meta", "act_odd")])
    assert result.connection.token_expires_at == read
    kept = conn.execute(
        "SELECT token_expires_at::text = %s::timestamptz::text, account_name"
        " FROM cmis.platform_connections WHERE connection_id = %s",
        (stored, connection_id),
    ).fetchone()
    assert kept == (True, "renamed")


@pytest.mark.parametrize("column", ["scopes", "account_metadata"])
def test_json_too_deep_for_python_reads_as_its_text(db, connect, org_id, column):
    document = nested(1500)
    connection_id = _store_around_the_functions(db, org_id, **{column: document})
    repo = PlatformConnectionRepository(connect(autocommit=True))
    [row] = repo.list(org_id)
    value = getattr(row, column)
    assert isinstance(value, UnparsedJson)
    assert value.replace(" ", "") == document
    assert "act_odd" in repr(row)  # a row holding it can still be shown and logged
    result = repo.upsert(org_id, "meta", "act_odd")
    assert isinstance(getattr(result.connection, column), UnparsedJson)
    assert repo.get(org_id, connection_id) is not None


@pytest.mark.parametrize("column", ["scopes", "account_metadata"])
def test_json_depth_limit_is_one_number_on_every_path(db, org_id, column):
    """MAX_JSON_DEPTH levels pass, one more is refused (22023), through the
    single call and the bulk call in SQL, and the repository's two methods."""
    ok, too_deep = nested_value(MAX_JSON_DEPTH), nested_value(MAX_JSON_DEPTH + 1)
    assert json.dumps(ok) == nested(MAX_JSON_DEPTH)
    repo = PlatformConnectionRepository(db)
    single = (
        f"SELECT outcome FROM cmis.upsert_platform_connection(%s, 'meta', %s, p_{column} => %s)"
    )
    bulk = "SELECT outcome FROM cmis.upsert_platform_connections(%s, %s)"

    assert db.execute(single, (org_id, "a1", Jsonb(ok))).fetchone() == ("created",)
    assert db.execute(bulk, (org_id, Jsonb([{"platform": "meta", "account_id": "a2", column: ok}])))
    assert repo.upsert(org_id, "meta", "a3", **{column: ok}).outcome is Outcome.CREATED
    assert repo.upsert_many(org_id, [ConnectionInput("meta", "a4", **{column: ok})])
    db.commit()
    before = db.execute("SELECT count(*) FROM cmis.platform_connections").fetchone()

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="deeper than 100"):
        db.execute(single, (org_id, "b1", Jsonb(too_deep)))
    db.rollback()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"element 1 .* deeper than 100"):
        db.execute(
            bulk, (org_id, Jsonb([{"platform": "meta", "account_id": "b2", column: too_deep}]))
        )
    db.rollback()
    with pytest.raises(InvalidInputError, match=f"p_{column} is nested deeper than 100"):
        repo.upsert(org_id, "meta", "b3", **{column: too_deep})
    with pytest.raises(InvalidInputError, match=f"p_rows element 2 {column} is nested deeper"):
        repo.upsert_many(
            org_id,
            [ConnectionInput("meta", "b4"), ConnectionInput("meta", "b5", **{column: too_deep})],
        )
    with pytest.raises(InvalidInputError, match="deeper than"):
        repo.upsert(org_id, "meta", "b6", **{column: nested_value(1500)})
    db.rollback()
    assert db.execute("SELECT count(*) FROM cmis.platform_connections").fetchone() == before


@pytest.mark.parametrize(
    "argument",
    ["platform", "account_id", "account_name", "status", "access_token", "refresh_token"],
)
@pytest.mark.parametrize("with_cipher", [False, True], ids=["plain", "cipher"])
def test_a_lone_surrogate_is_invalid_input_and_nothing_is_written(
    db, org_id, argument, with_cipher
):
    cipher = (
        LaravelEncrypter("base64:" + base64.b64encode(os.urandom(32)).decode())
        if with_cipher
        else None
    )
    repo = PlatformConnectionRepository(db, cipher=cipher)
    arguments = {"platform": "meta", "account_id": "act_1", argument: json.loads('"x\\ud800"')}
    platform, account_id = arguments.pop("platform"), arguments.pop("account_id")
    with pytest.raises(InvalidInputError) as caught:
        repo.upsert(org_id, platform, account_id, **arguments)
    assert caught.value.message.startswith(f"p_{argument} contains a lone surrogate")
    assert caught.value.sqlstate == "22021"
    assert caught.value.__context__ is None
    db.rollback()
    assert db.execute("SELECT count(*) FROM cmis.platform_connections").fetchone() == (0,)


def test_a_lone_surrogate_in_json_is_invalid_input(db, org_id):
    repo = PlatformConnectionRepository(db)
    with pytest.raises(InvalidInputError, match="p_scopes has a string that contains a lone"):
        repo.upsert(org_id, "meta", "act_1", scopes=[json.loads('"\\udfff"')])
