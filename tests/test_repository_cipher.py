"""The repository with a Laravel cipher: tokens are stored as the app stores
them (``Crypt::encryptString`` payloads) and read back as plaintext; a wrong key
or a tampered payload is an error naming the connection; and no token, plain
or encrypted, and no key reaches a log line or an exception of a failing call.
"""

from __future__ import annotations

import base64
import logging
import os
import traceback
import uuid
from typing import Any

import psycopg
import pytest

from cmis_repo import (
    DecryptionError,
    LaravelEncrypter,
    Outcome,
    PlatformConnectionRepository,
    RepositoryError,
)
from tests.support.orgs import make_org

ACCESS = "EAAB-plain-access-token-0123456789"
REFRESH = "plain-refresh-token-9876543210"


def new_key() -> str:
    return "base64:" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def cipher(key: str) -> LaravelEncrypter:
    return LaravelEncrypter(key)


def stored(db: psycopg.Connection[Any], connection_id: uuid.UUID) -> tuple[str, str]:
    row = db.execute(
        "SELECT access_token, refresh_token FROM cmis.platform_connections"
        " WHERE connection_id = %s",
        (connection_id,),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_tokens_are_stored_encrypted_and_read_back_plain(db, org_id, key, cipher):
    repo = PlatformConnectionRepository(db, cipher=cipher)
    created = repo.upsert(org_id, "meta", "act_1", access_token=ACCESS, refresh_token=REFRESH)
    row = created.connection
    assert (row.access_token, row.refresh_token) == (ACCESS, REFRESH)

    access_payload, refresh_payload = stored(db, row.connection_id)
    assert ACCESS not in access_payload
    assert REFRESH not in refresh_payload
    # What is stored is a Laravel payload the app's key opens.
    other_reader = LaravelEncrypter(key)  # the app, with the same APP_KEY
    assert other_reader.decrypt(access_payload) == ACCESS
    assert other_reader.decrypt(refresh_payload) == REFRESH

    # Every read decrypts: get, list, restore, and an upsert that keeps the tokens.
    got = repo.get(org_id, row.connection_id)
    assert got is not None
    assert got.access_token == ACCESS
    assert [c.refresh_token for c in repo.list(org_id)] == [REFRESH]
    assert repo.soft_delete(org_id, row.connection_id)
    restored = repo.restore(org_id, row.connection_id)
    assert (restored.access_token, restored.refresh_token) == (ACCESS, REFRESH)
    kept = repo.upsert(org_id, "meta", "act_1", account_name="renamed")
    assert kept.outcome is Outcome.UPDATED
    assert (kept.connection.access_token, kept.connection.refresh_token) == (ACCESS, REFRESH)
    # A new token replaces one; the other is still the stored payload, decrypted.
    rotated = repo.upsert(org_id, "meta", "act_1", access_token="new-access")
    assert (rotated.connection.access_token, rotated.connection.refresh_token) == (
        "new-access",
        REFRESH,
    )
    assert stored(db, row.connection_id)[1] == refresh_payload


def test_rows_the_app_wrote_are_read_and_null_tokens_stay_null(db, org_id, key, cipher):
    app = LaravelEncrypter(key)  # the Laravel side, same APP_KEY
    connection_id = db.execute(
        "INSERT INTO cmis.platform_connections (org_id, platform, account_id, access_token)"
        " VALUES (%s, 'google', 'g_1', %s) RETURNING connection_id",
        (org_id, app.encrypt(ACCESS)),
    ).fetchone()[0]
    row = PlatformConnectionRepository(db, cipher=cipher).get(org_id, connection_id)
    assert row is not None
    assert (row.access_token, row.refresh_token) == (ACCESS, None)


def test_rows_under_a_previous_key_are_read(db, org_id, key):
    old = PlatformConnectionRepository(db, cipher=LaravelEncrypter(key))
    row = old.upsert(org_id, "meta", "act_1", access_token=ACCESS).connection
    rotated = PlatformConnectionRepository(db, cipher=LaravelEncrypter(new_key(), [key]))
    got = rotated.get(org_id, row.connection_id)
    assert got is not None
    assert got.access_token == ACCESS


def test_without_a_cipher_tokens_are_stored_as_given(db, org_id):
    row = PlatformConnectionRepository(db).upsert(org_id, "meta", "a", access_token=ACCESS)
    assert stored(db, row.connection.connection_id)[0] == ACCESS


def secrets_of(db, connection_id, *plain: str, keys: tuple[str, ...] = ()) -> list[str]:
    """Everything that must never be shown: the plaintexts, the stored payloads, the keys."""
    payloads = [p for p in stored(db, connection_id) if p] if connection_id else []
    return [*plain, *payloads, *keys]


def exception_texts(error: BaseException) -> str:
    """Every text an error handler or a log formatter could get from ``error``."""
    texts = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), repr(seen.args), "".join(traceback.format_exception(seen))]
        texts += [str(getattr(seen, "hint", "")), str(getattr(seen, "message", ""))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


def assert_hidden(text: str, secrets: list[str]) -> None:
    """No secret in ``text``, nor any 32-character piece of one: PostgreSQL cuts
    each value of a "Failing row contains" DETAIL to 64 bytes."""
    for secret in secrets:
        pieces = {secret} | {secret[i : i + 32] for i in range(0, max(len(secret) - 31, 1), 16)}
        for piece in pieces:
            assert piece not in text, "a secret was shown"


def test_a_wrong_key_names_the_connection_and_nothing_secret(db, org_id, key, caplog):
    caplog.set_level(logging.DEBUG)
    row = (
        PlatformConnectionRepository(db, cipher=LaravelEncrypter(key))
        .upsert(org_id, "meta", "act_1", access_token=ACCESS, refresh_token=REFRESH)
        .connection
    )
    wrong = new_key()
    repo = PlatformConnectionRepository(db, cipher=LaravelEncrypter(wrong))
    for read in (
        lambda: repo.get(org_id, row.connection_id),
        lambda: repo.list(org_id),
        lambda: repo.upsert(org_id, "meta", "act_1", account_name="x"),
    ):
        with pytest.raises(DecryptionError) as caught:
            read()
        assert str(row.connection_id) in str(caught.value)
        assert "access_token" in str(caught.value)
        assert caught.value.__context__ is None
        assert caught.value.__cause__ is None
        assert_hidden(
            exception_texts(caught.value),
            secrets_of(db, row.connection_id, ACCESS, REFRESH, keys=(key, wrong)),
        )
    assert_hidden(caplog.text, secrets_of(db, row.connection_id, ACCESS, REFRESH, keys=(key,)))


@pytest.mark.parametrize("field", ["access_token", "refresh_token"])
def test_a_tampered_payload_names_the_connection(db, org_id, cipher, field):
    repo = PlatformConnectionRepository(db, cipher=cipher)
    row = repo.upsert(org_id, "meta", "a", access_token=ACCESS, refresh_token=REFRESH).connection
    payload = stored(db, row.connection_id)[0 if field == "access_token" else 1]
    decoded = base64.b64decode(payload).decode()
    tampered = base64.b64encode(decoded.replace('"value":"', '"value":"A', 1).encode()).decode()
    db.execute(
        f"UPDATE cmis.platform_connections SET {field} = %s WHERE connection_id = %s",
        (tampered, row.connection_id),
    )
    with pytest.raises(DecryptionError) as caught:
        repo.get(org_id, row.connection_id)
    assert str(row.connection_id) in str(caught.value)
    assert field in str(caught.value)
    assert_hidden(exception_texts(caught.value), [ACCESS, REFRESH, payload, tampered])


def failing_calls(repo: PlatformConnectionRepository, org_id: uuid.UUID):
    def upsert(org: uuid.UUID, platform: str, account_id: str, status: str = "active") -> Any:
        return repo.upsert(
            org, platform, account_id, status=status, access_token=ACCESS, refresh_token=REFRESH
        )

    return {
        "bad-status": lambda: upsert(org_id, "meta", "a", status="paused"),
        "bad-platform": lambda: upsert(org_id, "Meta Ads", "a"),
        "unknown-org": lambda: upsert(uuid.uuid4(), "meta", "a"),
        "app-constraint": lambda: upsert(org_id, "meta", "b"),
    }


class RecordingCipher:
    """A LaravelEncrypter that remembers every payload it made, so that the
    search below also looks for the ciphertexts of the failing calls' tokens."""

    def __init__(self, inner: LaravelEncrypter) -> None:
        self.inner = inner
        self.payloads: list[str] = []

    def encrypt(self, plaintext: str) -> str:
        payload = self.inner.encrypt(plaintext)
        self.payloads.append(payload)
        return payload

    def decrypt(self, payload: str) -> str:
        return self.inner.decrypt(payload)


@pytest.mark.parametrize("with_cipher", [False, True], ids=["plain", "laravel-cipher"])
def test_failing_calls_show_no_token_in_logs_or_exceptions(db, org_id, key, with_cipher, caplog):
    """Each failing call's exception (every text of it, its chain included) and
    every log line at DEBUG, psycopg's included, are searched for the tokens as
    passed, as they would be stored, and for the key."""
    caplog.set_level(logging.DEBUG)
    cipher = RecordingCipher(LaravelEncrypter(key)) if with_cipher else None
    repo = PlatformConnectionRepository(db, cipher=cipher)
    other = make_org(db, "Other")
    # A live row whose stored tokens could show up in a DETAIL.
    row = repo.upsert(org_id, "meta", "a", access_token=ACCESS, refresh_token=REFRESH).connection
    db.commit()
    secrets = secrets_of(db, row.connection_id, ACCESS, REFRESH, keys=(key,))
    # A NOT NULL column of the app's that our INSERT does not fill: PostgreSQL's
    # DETAIL then lists the whole failing row, tokens included.
    db.execute("ALTER TABLE cmis.platform_connections ADD COLUMN tenant_ref text")
    db.execute(
        "ALTER TABLE cmis.platform_connections ADD CONSTRAINT tenant_ref_set"
        " CHECK (tenant_ref IS NOT NULL OR account_id <> 'b')"
    )
    db.commit()
    for name, call in failing_calls(repo, org_id).items():
        with pytest.raises(RepositoryError) as caught:
            call()
        db.rollback()
        assert caught.value.__context__ is None, name
        made = cipher.payloads if cipher is not None else []
        assert_hidden(exception_texts(caught.value), secrets + made)
    # The org check: the session names another org than the call.
    db.execute("SELECT set_config('app.current_org_id', %s, false)", (str(other),))
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        db.execute(
            "SELECT * FROM cmis.upsert_platform_connection(%s, 'meta', 'a', p_access_token => %s)",
            (org_id, ACCESS),
        )
    db.rollback()
    assert_hidden(str(refused.value), secrets)
    assert caplog.records, "nothing was logged: the search would prove nothing"
    assert_hidden(caplog.text, secrets + (cipher.payloads if cipher is not None else []))
