"""Token encryption exactly as Laravel's ``Crypt::encryptString`` (aes-256-cbc).

The Laravel app stores ``access_token`` and ``refresh_token`` encrypted with
its ``APP_KEY``; :class:`LaravelEncrypter` reads and writes the same payloads,
so that values written here stay readable by the app and the other way round.

A payload is ``base64(json)``, the JSON being, byte for byte as PHP's
``json_encode(compact('iv', 'value', 'mac', 'tag'), JSON_UNESCAPED_SLASHES)``
writes it::

    {"iv":"<base64 16 bytes>","value":"<base64 ciphertext>","mac":"<hex>","tag":""}

``value`` is AES-256-CBC with PKCS#7 padding under the raw 32-byte key and the
random IV; ``mac`` is the lowercase hex HMAC-SHA256, keyed with the same raw
key, of the base64 strings ``iv`` and ``value`` concatenated.

Decryption tries the current key, then each previous key (``APP_PREVIOUS_KEYS``)
in order, and decrypts with the first one whose MAC verifies, as Laravel does.
Errors say what is wrong and never contain a key, a payload or a plaintext.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cmis_repo.errors import DecryptionError, EncryptionKeyError

__all__ = ["KEY_BYTES", "LaravelEncrypter", "TokenCipher"]

#: Bytes of an aes-256-cbc key.
KEY_BYTES = 32
_IV_BYTES = 16
_BLOCK_BITS = 128
_PREFIX = "base64:"
_MAC_HEX = re.compile(r"[0-9a-f]{64}")
_NOT_JSON = object()


class TokenCipher(Protocol):
    """What the repository needs to encrypt tokens on the way in and decrypt them on the way out."""

    def encrypt(self, plaintext: str) -> str:
        """The payload that stores ``plaintext``."""
        ...

    def decrypt(self, payload: str) -> str:
        """The plaintext of ``payload``; raises :class:`~cmis_repo.DecryptionError`."""
        ...


def _parse_key(key: str, name: str) -> bytes:
    """The raw key of an ``APP_KEY`` string, as Laravel's ``parseKey``; ``name`` is for messages."""
    if not isinstance(key, str):
        raise EncryptionKeyError(f"{name} must be a string, got {type(key).__name__}")
    if key.startswith(_PREFIX):
        try:
            raw = base64.b64decode(key[len(_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raw = None
        if raw is None:
            raise EncryptionKeyError(f"{name} is not valid base64 after 'base64:'")
    else:
        # A raw key: PHP strings are bytes, and the environment's bytes are these.
        try:
            raw = key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # its message would quote the key
            raw = None
        if raw is None:
            raise EncryptionKeyError(f"{name} is not encodable as bytes")
    if len(raw) != KEY_BYTES:
        raise EncryptionKeyError(
            f"{name} must be {KEY_BYTES} bytes (base64:…), got {len(raw)} bytes"
        )
    return raw


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64, or ``None``."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class _Payload:
    """The checked fields of a payload: ``iv`` and ``value`` as given, the IV and MAC as bytes."""

    __slots__ = ("iv", "iv_text", "mac", "value_text")

    def __init__(self, iv_text: str, value_text: str, iv: bytes, mac: bytes | None) -> None:
        self.iv_text = iv_text
        self.value_text = value_text
        self.iv = iv
        self.mac = mac  # None when not 64 lowercase hex digits: valid under no key

    def __repr__(self) -> str:
        return "_Payload(...)"


def _parse_payload(payload: str) -> _Payload:
    """Decode a payload's base64 and JSON and check its fields, or raise :class:`DecryptionError`.

    Every error is raised outside any ``except`` block, so that no exception
    carrying a piece of the payload is chained to it.
    """
    if not isinstance(payload, str):
        raise DecryptionError(f"the payload must be a string, got {type(payload).__name__}")
    raw = _b64decode(payload)
    if raw is None:
        raise DecryptionError("the payload is not valid base64")
    try:
        decoded: object = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        decoded = _NOT_JSON
    if decoded is _NOT_JSON:
        raise DecryptionError("the payload is not valid JSON")
    if not isinstance(decoded, dict):
        raise DecryptionError("the payload is not a JSON object")
    iv_text, value_text, mac_text = (decoded.get(name) for name in ("iv", "value", "mac"))
    if not (isinstance(iv_text, str) and isinstance(value_text, str) and isinstance(mac_text, str)):
        missing = [
            name
            for name, field in (("iv", iv_text), ("value", value_text), ("mac", mac_text))
            if not isinstance(field, str)
        ]
        raise DecryptionError(f"the payload lacks the string field(s) {', '.join(missing)}")
    if not _is_utf8(value_text):
        # A lone surrogate escape ("\\ud800"): PHP's json_decode refuses it too.
        raise DecryptionError("the payload is not valid JSON")
    tag = decoded.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise DecryptionError("the payload's tag is not a string")
    # Laravel's ensureTagIsValid: aes-256-cbc takes no tag, and PHP's empty()
    # holds "" and "0" for none. The tag is outside the MAC: accepting one
    # would read payloads the app refuses.
    if tag not in (None, "", "0"):
        raise DecryptionError("the payload has a tag, which aes-256-cbc does not use")
    iv = _b64decode(iv_text)
    if iv is None or len(iv) != _IV_BYTES:
        raise DecryptionError(f"the payload's iv is not base64 of {_IV_BYTES} bytes")
    # Laravel compares hex strings with hash_equals: only its own lowercase spelling matches.
    mac = bytes.fromhex(mac_text) if _MAC_HEX.fullmatch(mac_text) else None
    return _Payload(iv_text, value_text, iv, mac)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _mac(key: bytes, iv_text: str, value_text: str) -> hmac.HMAC:
    """HMAC-SHA256 of the ``iv`` and ``value`` strings, as PHP hashes their UTF-8 bytes."""
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(iv_text.encode("utf-8"))
    mac.update(value_text.encode("utf-8"))
    return mac


def _mac_verifies(key: bytes, payload: _Payload) -> bool:
    if payload.mac is None:
        return False
    try:
        _mac(key, payload.iv_text, payload.value_text).verify(payload.mac)
    except InvalidSignature:
        return False
    return True


class LaravelEncrypter:
    """Laravel's ``Illuminate\\Encryption\\Encrypter`` (aes-256-cbc), ``encryptString`` flavour.

    ``key`` is an ``APP_KEY``: ``base64:`` followed by the base64 of 32 bytes,
    or a raw 32-byte string. ``previous_keys`` are tried, in order, after it
    when decrypting (``APP_PREVIOUS_KEYS``). A malformed key raises
    :class:`EncryptionKeyError`. ``repr`` shows how many previous keys there
    are, never a key.
    """

    __slots__ = ("_keys",)

    def __init__(self, key: str, previous_keys: Iterable[str] = ()) -> None:
        if isinstance(previous_keys, str):
            raise EncryptionKeyError("previous_keys must be an iterable of keys, not one string")
        current = _parse_key(key, "APP_KEY")
        previous = [
            _parse_key(old, f"APP_PREVIOUS_KEYS entry {number}")
            for number, old in enumerate(previous_keys, start=1)
        ]
        self._keys: tuple[bytes, ...] = (current, *previous)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LaravelEncrypter:
        """The encrypter of ``APP_KEY`` and ``APP_PREVIOUS_KEYS`` (comma-separated).

        ``environ`` defaults to ``os.environ``. A missing or empty ``APP_KEY``
        raises :class:`EncryptionKeyError`.
        """
        env = os.environ if environ is None else environ
        key = env.get("APP_KEY", "")
        if not key:
            raise EncryptionKeyError(
                "APP_KEY is not set: set it to the Laravel app's key (base64:…)"
            )
        previous = [entry.strip() for entry in env.get("APP_PREVIOUS_KEYS", "").split(",")]
        return cls(key, [entry for entry in previous if entry])

    @property
    def previous_key_count(self) -> int:
        """How many previous keys decryption falls back to."""
        return len(self._keys) - 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(previous_keys={self.previous_key_count})"

    def encrypt(self, plaintext: str) -> str:
        """The payload of ``plaintext`` (UTF-8) under the current key, with a random IV."""
        if not isinstance(plaintext, str):
            raise TypeError(f"plaintext must be a string, got {type(plaintext).__name__}")
        key = self._keys[0]
        iv = os.urandom(_IV_BYTES)
        padder = padding.PKCS7(_BLOCK_BITS).padder()
        padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        iv_text = base64.b64encode(iv).decode("ascii")
        value_text = base64.b64encode(ciphertext).decode("ascii")
        mac_text = _mac(key, iv_text, value_text).finalize().hex()
        # PHP's json_encode(..., JSON_UNESCAPED_SLASHES) of these ASCII strings: no escapes.
        body = json.dumps(
            {"iv": iv_text, "value": value_text, "mac": mac_text, "tag": ""},
            separators=(",", ":"),
        )
        return base64.b64encode(body.encode("ascii")).decode("ascii")

    def decrypt(self, payload: str) -> str:
        """The plaintext of ``payload``, under the first key whose MAC verifies.

        Raises :class:`DecryptionError` saying what is wrong: malformed
        payload, a MAC valid under no key, or data that does not decrypt.
        """
        parsed = _parse_payload(payload)
        for key in self._keys:
            if _mac_verifies(key, parsed):
                return self._decrypt_with(key, parsed)
        raise DecryptionError(
            f"the MAC is invalid under the current key and {self.previous_key_count} "
            "previous key(s)"
        )

    def uses_current_key(self, payload: str) -> bool:
        """Whether ``payload``'s MAC verifies under the current key; ``False`` if malformed."""
        try:
            parsed = _parse_payload(payload)
        except DecryptionError:
            return False
        return _mac_verifies(self._keys[0], parsed)

    @staticmethod
    def _decrypt_with(key: bytes, payload: _Payload) -> str:
        ciphertext = _b64decode(payload.value_text)
        plaintext: str | None = None
        if ciphertext and len(ciphertext) % (_BLOCK_BITS // 8) == 0:
            decryptor = Cipher(algorithms.AES(key), modes.CBC(payload.iv)).decryptor()
            padded = decryptor.update(ciphertext) + decryptor.finalize()
            unpadder = padding.PKCS7(_BLOCK_BITS).unpadder()
            try:
                data = unpadder.update(padded) + unpadder.finalize()
                plaintext = data.decode("utf-8")
            except ValueError:  # bad padding, or UnicodeDecodeError (a ValueError)
                plaintext = None
        if plaintext is None:
            raise DecryptionError("could not decrypt the data")
        return plaintext
