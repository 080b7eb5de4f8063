"""Tokens encrypted exactly as Laravel's ``Crypt::encryptString``: vectors, PHP both ways, errors.

No database needed. The PHP tests run ``tests/php/laravel_encrypter.php`` (Laravel's
Encrypter as plain PHP) once per batch of values.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import traceback
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cmis_repo import (
    DecryptionError,
    EncryptionKeyError,
    LaravelEncrypter,
    RepositoryError,
    TokenCipher,
)

PHP_SCRIPT = Path(__file__).parent / "php" / "laravel_encrypter.php"

#: A fixed test key, and a payload PHP (tests/php/laravel_encrypter.php) made with it.
FIXED_KEY = "base64:" + base64.b64encode(bytes(range(32))).decode()
FIXED_PLAINTEXT = "EAAB-token/with+slashes=é"
FIXED_PHP_PAYLOAD = (
    "eyJpdiI6ImJ0cjcyTUYrMHNUa0c5bi83VnVXaVE9PSIsInZhbHVlIjoiRE5VbFNQcjJhN3BNcWNkQlJ0S2FhTURSM3Iw"
    "eEhJV2lER1pNaXR5WEJFZz0iLCJtYWMiOiJhOTk5OGQ1YWU4MGMwY2YzY2NkNTVhZWRhZjlkM2YxYmM4OGIxYzBjZjM0"
    "YTFjMWNhYTgzNzVlMDVhZTM2NmU2IiwidGFnIjoiIn0="
)

SAMPLES = [
    "",
    "a",
    "EAABsbCS1iHgBO7ZC8xZBjtKzl4ZD",
    "unicode: é ß 日本語 🎉 \u0000 \u2028",
    "slashes/and+plus=signs//++==",
    "quotes \" ' \\ and a backslash-u \\u00e9 and a newline\n",
    "x" * 10_240,
    "exactly-sixteen!",  # one full block: PKCS#7 adds a whole padding block
]


def new_key() -> str:
    return "base64:" + base64.b64encode(os.urandom(32)).decode()


def raw(key: str) -> bytes:
    return base64.b64decode(key.removeprefix("base64:"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hmac_hex(key: bytes, data: bytes) -> str:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize().hex()


def reference_encrypt(key: str, plaintext: bytes, iv: bytes, *, pad: bool = True) -> str:
    """Laravel's payload built here from cryptography's primitives, independently of the module."""
    if pad:
        padder = padding.PKCS7(128).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(raw(key)), modes.CBC(iv)).encryptor()
    value = b64(encryptor.update(plaintext) + encryptor.finalize())
    iv_text = b64(iv)
    mac = hmac_hex(raw(key), (iv_text + value).encode())
    body = '{"iv":"' + iv_text + '","value":"' + value + '","mac":"' + mac + '","tag":""}'
    return b64(body.encode())


def fields(payload: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(payload))
    return decoded


def rebuild(payload_fields: dict[str, Any]) -> str:
    return b64(json.dumps(payload_fields, separators=(",", ":")).encode())


def with_mac(key: str, iv_text: str, value: str, **extra: Any) -> str:
    """A payload with these fields and the MAC that makes them verify under ``key``."""
    mac = hmac_hex(raw(key), (iv_text + value).encode())
    return rebuild({"iv": iv_text, "value": value, "mac": mac, "tag": "", **extra})


# -- vectors ------------------------------------------------------------------------------------


def test_decrypts_a_payload_php_made_with_a_fixed_key():
    assert LaravelEncrypter(FIXED_KEY).decrypt(FIXED_PHP_PAYLOAD) == FIXED_PLAINTEXT


@pytest.mark.parametrize("plaintext", SAMPLES)
def test_decrypts_payloads_built_from_the_primitives(plaintext):
    key = new_key()
    payload = reference_encrypt(key, plaintext.encode(), os.urandom(16))
    assert LaravelEncrypter(key).decrypt(payload) == plaintext


def test_decrypts_a_fixed_iv_vector():
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    payload = reference_encrypt(FIXED_KEY, b"token", iv)
    assert LaravelEncrypter(FIXED_KEY).decrypt(payload) == "token"


def test_encrypt_writes_laravels_format_field_by_field():
    key = new_key()
    plaintext = "EAAB/token+x"
    payload = LaravelEncrypter(key).encrypt(plaintext)

    body = base64.b64decode(payload, validate=True)
    assert b64(body) == payload  # standard alphabet, canonical padding
    assert b" " not in body
    decoded = json.loads(body)
    assert list(decoded) == ["iv", "value", "mac", "tag"]
    iv_text, value, mac = decoded["iv"], decoded["value"], decoded["mac"]
    expected = f'{{"iv":"{iv_text}","value":"{value}","mac":"{mac}","tag":""}}'
    assert body == expected.encode()
    assert b"\\/" not in body  # JSON_UNESCAPED_SLASHES
    assert decoded["tag"] == ""

    iv = base64.b64decode(decoded["iv"], validate=True)
    assert len(iv) == 16
    ciphertext = base64.b64decode(decoded["value"], validate=True)
    assert decoded["mac"] == hmac_hex(raw(key), (decoded["iv"] + decoded["value"]).encode())

    decryptor = Cipher(algorithms.AES(raw(key)), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    assert (unpadder.update(padded) + unpadder.finalize()).decode() == plaintext


def test_encrypt_uses_a_fresh_iv_each_time():
    encrypter = LaravelEncrypter(new_key())
    payloads = {encrypter.encrypt("same") for _ in range(50)}
    assert len(payloads) == 50
    assert len({fields(p)["iv"] for p in payloads}) == 50


@pytest.mark.parametrize("plaintext", SAMPLES)
def test_round_trip(plaintext):
    encrypter = LaravelEncrypter(new_key())
    assert encrypter.decrypt(encrypter.encrypt(plaintext)) == plaintext


def test_accepts_a_raw_32_byte_key_without_prefix():
    key = "0123456789abcdef0123456789ABCDEF"
    payload = reference_encrypt("base64:" + b64(key.encode()), b"raw", os.urandom(16))
    assert LaravelEncrypter(key).decrypt(payload) == "raw"


def test_a_payload_without_tag_decrypts():
    key = new_key()
    payload_fields = fields(LaravelEncrypter(key).encrypt("no tag"))
    del payload_fields["tag"]
    assert LaravelEncrypter(key).decrypt(rebuild(payload_fields)) == "no tag"


def test_is_a_token_cipher():
    cipher: TokenCipher = LaravelEncrypter(new_key())
    assert cipher.decrypt(cipher.encrypt("t")) == "t"


# -- previous keys ------------------------------------------------------------------------------


def test_previous_keys_are_tried_in_order():
    old, older, new = new_key(), new_key(), new_key()
    encrypter = LaravelEncrypter(new, [old, older])
    assert encrypter.decrypt(LaravelEncrypter(older).encrypt("older")) == "older"
    assert encrypter.decrypt(LaravelEncrypter(old).encrypt("old")) == "old"
    assert encrypter.decrypt(encrypter.encrypt("new")) == "new"
    # New payloads are under the current key only.
    with pytest.raises(DecryptionError):
        LaravelEncrypter(old).decrypt(encrypter.encrypt("new"))


def test_uses_current_key():
    old, new = new_key(), new_key()
    encrypter = LaravelEncrypter(new, [old])
    assert encrypter.uses_current_key(encrypter.encrypt("x"))
    assert encrypter.uses_current_key(reference_encrypt(new, b"x", os.urandom(16)))
    assert not encrypter.uses_current_key(LaravelEncrypter(old).encrypt("x"))
    assert not encrypter.uses_current_key(LaravelEncrypter(new_key()).encrypt("x"))
    for malformed in ("", "not base64!", b64(b"not json"), b64(b"[]"), "plain-token"):
        assert not encrypter.uses_current_key(malformed)
    tampered = fields(encrypter.encrypt("x"))
    tampered["mac"] = tampered["mac"][:-1] + ("0" if tampered["mac"][-1] != "0" else "1")
    assert not encrypter.uses_current_key(rebuild(tampered))


# -- keys ---------------------------------------------------------------------------------------


def test_repr_shows_no_key():
    key, old = new_key(), new_key()
    encrypter = LaravelEncrypter(key, [old, new_key()])
    assert repr(encrypter) == "LaravelEncrypter(previous_keys=2)"
    assert str(encrypter) == repr(encrypter)
    for secret in (key, old, raw(key).hex(), key.removeprefix("base64:")):
        assert secret not in repr(encrypter)
    assert not hasattr(encrypter, "__dict__")


SHORT_KEY = "base64:" + b64(b"sixteen-byte-key")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (SHORT_KEY, "APP_KEY must be 32 bytes (base64:…), got 16 bytes"),
        ("base64:" + b64(os.urandom(33)), "APP_KEY must be 32 bytes (base64:…), got 33 bytes"),
        ("short-raw-key-31-bytes-long-xyz", "got 31 bytes"),
        ("base64:not*base64*at*all", "APP_KEY is not valid base64"),
        ("", "got 0 bytes"),
        ("lone-surrogate-\ud800-key-xxxxxxxx", "APP_KEY is not encodable as bytes"),
    ],
)
def test_malformed_keys_are_named_not_shown(key, expected):
    with pytest.raises(EncryptionKeyError) as caught:
        LaravelEncrypter(key)
    assert expected in str(caught.value)
    assert_not_in_error(caught.value, key, key.removeprefix("base64:"))


def test_a_malformed_previous_key_is_named_by_position():
    with pytest.raises(EncryptionKeyError) as caught:
        LaravelEncrypter(new_key(), [new_key(), SHORT_KEY])
    assert "APP_PREVIOUS_KEYS entry 2 must be 32 bytes" in str(caught.value)
    assert_not_in_error(caught.value, SHORT_KEY, SHORT_KEY.removeprefix("base64:"))


def test_key_errors_are_repository_and_value_errors():
    assert issubclass(EncryptionKeyError, RepositoryError)
    assert issubclass(EncryptionKeyError, ValueError)
    assert issubclass(DecryptionError, RepositoryError)


def test_from_env_reads_current_and_previous_keys():
    old, older, new = new_key(), new_key(), new_key()
    env = {"APP_KEY": new, "APP_PREVIOUS_KEYS": f" {old} ,, {older},"}
    encrypter = LaravelEncrypter.from_env(env)
    assert repr(encrypter) == "LaravelEncrypter(previous_keys=2)"
    assert encrypter.uses_current_key(LaravelEncrypter(new).encrypt("x"))
    assert encrypter.decrypt(LaravelEncrypter(older).encrypt("older")) == "older"
    assert encrypter.decrypt(LaravelEncrypter(old).encrypt("old")) == "old"


def test_from_env_without_previous_keys():
    key = new_key()
    for env in ({"APP_KEY": key}, {"APP_KEY": key, "APP_PREVIOUS_KEYS": ""}):
        assert repr(LaravelEncrypter.from_env(env)) == "LaravelEncrypter(previous_keys=0)"


def test_from_env_defaults_to_os_environ(monkeypatch):
    key = new_key()
    monkeypatch.setenv("APP_KEY", key)
    monkeypatch.delenv("APP_PREVIOUS_KEYS", raising=False)
    assert LaravelEncrypter.from_env().uses_current_key(LaravelEncrypter(key).encrypt("x"))


@pytest.mark.parametrize("env", [{}, {"APP_KEY": ""}, {"APP_PREVIOUS_KEYS": FIXED_KEY}])
def test_from_env_without_app_key(env):
    with pytest.raises(EncryptionKeyError, match="APP_KEY is not set"):
        LaravelEncrypter.from_env(env)


def test_from_env_names_a_malformed_previous_key():
    with pytest.raises(EncryptionKeyError, match="APP_PREVIOUS_KEYS entry 1 must be 32 bytes"):
        LaravelEncrypter.from_env({"APP_KEY": new_key(), "APP_PREVIOUS_KEYS": SHORT_KEY})


# -- bad payloads -------------------------------------------------------------------------------

PLAINTEXT = "EAAB-secret-token-do-not-leak"


def assert_not_in_error(error: BaseException, *secrets: str) -> None:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    for text in texts:
        for secret in secrets:
            if secret:
                assert secret not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def tamper_char(text: str) -> str:
    """``text`` with its first character changed, still in the base64 and hex alphabets."""
    return ("b" if text[0] != "b" else "c") + text[1:]


def bad_payloads(key: str) -> dict[str, tuple[str, str]]:
    """Bad payloads by case: (payload, the message the error must say)."""
    good = LaravelEncrypter(key).encrypt(PLAINTEXT)
    good_fields = fields(good)
    iv_text, value = good_fields["iv"], good_fields["value"]
    mac_invalid = "the MAC is invalid under the current key and 0 previous key(s)"

    def changed(**changes: Any) -> str:
        return rebuild({**good_fields, **changes})

    without_mac = {k: v for k, v in good_fields.items() if k != "mac"}
    half = good[: len(good) // 2 // 4 * 4]
    return {
        "wrong key": (LaravelEncrypter(new_key()).encrypt(PLAINTEXT), mac_invalid),
        "tampered value": (changed(value=tamper_char(value)), mac_invalid),
        "tampered iv": (changed(iv=b64(os.urandom(16))), mac_invalid),
        "tampered mac": (changed(mac=tamper_char(good_fields["mac"])), mac_invalid),
        "upper-case mac": (changed(mac=good_fields["mac"].upper()), mac_invalid),
        "non-hex mac": (changed(mac="z" * 64), mac_invalid),
        "empty mac": (changed(mac=""), mac_invalid),
        "truncated payload": (good[:-3], "the payload is not valid base64"),
        "truncated json": (half, "the payload is not valid JSON"),
        "non-base64": (good.replace("e", "!"), "the payload is not valid base64"),
        "url-safe alphabet": ("-_" + good, "the payload is not valid base64"),
        "empty payload": ("", "the payload is not valid JSON"),
        "non-JSON": (b64(PLAINTEXT.encode()), "the payload is not valid JSON"),
        "lone surrogate in value": (
            b64(f'{{"iv":"{iv_text}","value":"\\ud800{value}","mac":"{"0" * 64}"}}'.encode()),
            "the payload is not valid JSON",
        ),
        "JSON array": (b64(json.dumps([iv_text, value]).encode()), "not a JSON object"),
        "JSON string": (b64(json.dumps(PLAINTEXT).encode()), "not a JSON object"),
        "missing mac": (rebuild(without_mac), "lacks the string field(s) mac"),
        "numeric value": (changed(value=123), "lacks the string field(s) value"),
        "null iv": (changed(iv=None), "lacks the string field(s) iv"),
        "non-string tag": (changed(tag=[]), "tag is not a string"),
        # Laravel's ensureTagIsValid: aes-256-cbc takes no tag (it is not under the MAC).
        "a tag on a cbc payload": (changed(tag="AAAA"), "has a tag"),
        "15-byte iv": (with_mac(key, b64(os.urandom(15)), value), "iv is not base64 of 16 bytes"),
        "17-byte iv": (with_mac(key, b64(os.urandom(17)), value), "iv is not base64 of 16 bytes"),
        "non-base64 iv": (with_mac(key, "*" * 24, value), "iv is not base64 of 16 bytes"),
        "bad padding": (
            with_mac(key, iv_text, b64(os.urandom(15) + b"\x00")),
            "could not decrypt the data",
        ),
        "partial block": (
            with_mac(key, iv_text, b64(os.urandom(20))),
            "could not decrypt the data",
        ),
        "empty value": (with_mac(key, iv_text, ""), "could not decrypt the data"),
        "non-base64 value": (with_mac(key, iv_text, "%%%%"), "could not decrypt the data"),
        "not UTF-8": (
            reference_encrypt(key, b"\xff\xfe" + PLAINTEXT.encode(), os.urandom(16)),
            "could not decrypt the data",
        ),
    }


BAD_CASES = list(bad_payloads(FIXED_KEY))


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_payloads_raise_decryption_error_without_secrets(case):
    key = new_key()
    payload, expected = bad_payloads(key)[case]
    encrypter = LaravelEncrypter(key)
    with pytest.raises(DecryptionError) as caught:
        encrypter.decrypt(payload)
    assert expected in str(caught.value)
    secrets = [payload, key, key.removeprefix("base64:"), raw(key).hex(), PLAINTEXT]
    try:
        decoded = fields(payload)
    except ValueError:
        decoded = {}
    if isinstance(decoded, dict):
        secrets += [str(v) for v in decoded.values() if v]
    assert_not_in_error(caught.value, *secrets)
    # Only a MAC made with the current key passes, even when the data inside is bad.
    mac_verifies = expected == "could not decrypt the data"
    assert encrypter.uses_current_key(payload) is mac_verifies


def test_the_mac_error_counts_previous_keys():
    encrypter = LaravelEncrypter(new_key(), [new_key(), new_key()])
    with pytest.raises(DecryptionError) as caught:
        encrypter.decrypt(LaravelEncrypter(new_key()).encrypt(PLAINTEXT))
    assert str(caught.value) == "the MAC is invalid under the current key and 2 previous key(s)"


def test_a_non_string_payload_is_refused():
    with pytest.raises(DecryptionError, match="must be a string"):
        LaravelEncrypter(new_key()).decrypt(None)  # type: ignore[arg-type]


# -- PHP, both ways -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def php() -> str:
    path = shutil.which("php")
    if path is None:
        message = "php is not on PATH: `make system-deps` installs php-cli"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_php(
    php: str, op: str, key: str, values: list[str], previous_keys: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Laravel's Encrypter in PHP over a batch of values: one result per value."""
    request = {"op": op, "key": key, "previous_keys": list(previous_keys), "values": values}
    done = subprocess.run(
        [php, str(PHP_SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(results) == len(values)
    return results


def php_values(results: list[dict[str, Any]]) -> list[str]:
    assert all(r["ok"] for r in results), [r.get("error") for r in results]
    return [r["result"] for r in results]


#: Every length around the block size, and the samples.
PHP_SAMPLES = [*SAMPLES, *("é" * n for n in range(9)), *("k" * n for n in range(50))]


def test_php_payloads_decrypt_in_python(php):
    key = new_key()
    payloads = php_values(run_php(php, "encrypt", key, PHP_SAMPLES))
    encrypter = LaravelEncrypter(key)
    assert [encrypter.decrypt(p) for p in payloads] == PHP_SAMPLES
    assert all(encrypter.uses_current_key(p) for p in payloads)
    # PHP writes exactly the JSON shape the module writes.
    for payload in payloads:
        body = base64.b64decode(payload)
        assert rebuild(json.loads(body)) == payload
        assert list(json.loads(body)) == ["iv", "value", "mac", "tag"]


def test_python_payloads_decrypt_in_php(php):
    key = new_key()
    encrypter = LaravelEncrypter(key)
    payloads = [encrypter.encrypt(value) for value in PHP_SAMPLES]
    assert php_values(run_php(php, "decrypt", key, payloads)) == PHP_SAMPLES


def test_the_fixed_vector_decrypts_in_php(php):
    assert php_values(run_php(php, "decrypt", FIXED_KEY, [FIXED_PHP_PAYLOAD])) == [FIXED_PLAINTEXT]


def test_previous_keys_both_ways(php):
    old, older, new = new_key(), new_key(), new_key()
    # PHP encrypts under the old keys; Python decrypts with the new key and the old ones.
    from_php = php_values(run_php(php, "encrypt", old, SAMPLES)) + php_values(
        run_php(php, "encrypt", older, SAMPLES)
    )
    rotating = LaravelEncrypter(new, [old, older])
    assert [rotating.decrypt(p) for p in from_php] == SAMPLES + SAMPLES
    assert not any(rotating.uses_current_key(p) for p in from_php)
    # Python encrypts under the old keys; PHP decrypts with the new key and the old ones.
    from_python = [LaravelEncrypter(old).encrypt(v) for v in SAMPLES] + [
        LaravelEncrypter(older).encrypt(v) for v in SAMPLES
    ]
    assert php_values(run_php(php, "decrypt", new, from_python, (old, older))) == SAMPLES * 2
    # Re-encrypted by Python under the new key, PHP reads it with the new key alone.
    rotated = [rotating.encrypt(rotating.decrypt(p)) for p in from_php]
    assert php_values(run_php(php, "decrypt", new, rotated)) == SAMPLES * 2


def test_php_rejects_python_payloads_under_the_wrong_key(php):
    payloads = [LaravelEncrypter(new_key()).encrypt(v) for v in SAMPLES]
    results = run_php(php, "decrypt", new_key(), payloads, (new_key(),))
    assert results == [{"ok": False, "error": "The MAC is invalid."}] * len(SAMPLES)


def test_python_rejects_php_payloads_under_the_wrong_key(php):
    payloads = php_values(run_php(php, "encrypt", new_key(), SAMPLES))
    encrypter = LaravelEncrypter(new_key(), [new_key()])
    for payload in payloads:
        with pytest.raises(DecryptionError, match="MAC is invalid"):
            encrypter.decrypt(payload)
        assert not encrypter.uses_current_key(payload)


def test_php_and_python_agree_on_tampered_payloads(php):
    """Each bad payload PHP refuses, Python refuses too (PHP's messages are coarser)."""
    key = new_key()
    cases = bad_payloads(key)
    results = run_php(php, "decrypt", key, [payload for payload, _ in cases.values()])
    for (case, (payload, _)), result in zip(cases.items(), results, strict=True):
        if case in {"non-base64", "url-safe alphabet", "truncated payload"}:
            continue  # PHP's lenient base64_decode skips stray characters; Python is strict
        if case == "not UTF-8":
            assert result["ok"], case  # PHP strings are bytes; a Python str must be text
            continue
        assert not result["ok"], case
        with pytest.raises(DecryptionError):
            LaravelEncrypter(key).decrypt(payload)
