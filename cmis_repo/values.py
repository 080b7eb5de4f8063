"""Values at the edges: what the database can store, and what Python can hold.

The contract (README, "Values"):

- **Refused at the door**, by the functions (22xxx, nothing written) and by the
  repository before it sends anything (:class:`~cmis_repo.InvalidInputError`):
  text with a NUL character or a lone surrogate (no PostgreSQL text can hold
  either), and ``scopes`` / ``account_metadata`` nested deeper than
  :data:`MAX_JSON_DEPTH` levels.
- **Read back in a documented form**: values that SQL of the app's or a psql
  user stored around the functions, which Python's types cannot hold, never
  make a read fail. A ``token_expires_at`` of ``infinity`` or after year 9999
  reads as :data:`END_OF_TIME` (``datetime.max`` in UTC), ``-infinity`` or BC
  as :data:`START_OF_TIME`; a JSON value nested deeper than Python's parser
  goes reads as :class:`UnparsedJson`, its text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import postgres
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.types.json import JsonbLoader

#: How deep ``scopes`` and ``account_metadata`` may nest: an item at a deeper
#: level (the document itself is level 0) is refused. The functions check the
#: same number (tests/test_values.py proves them equal).
MAX_JSON_DEPTH = 100

#: What a timestamp after year 9999 (``infinity`` included) reads as.
END_OF_TIME = datetime.max.replace(tzinfo=UTC)
#: What a timestamp before year 1 (``-infinity``, BC) reads as.
START_OF_TIME = datetime.min.replace(tzinfo=UTC)


class UnparsedJson(str):
    """A JSON document too deeply nested for Python's parser, as its text.

    Only rows written around the functions can hold one (they refuse such
    documents). It is a ``str``, so that ``repr()`` and logging of a row never
    recurse; ``json.loads`` it yourself, with care, if you need its content.
    """

    __slots__ = ()


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store ``value`` as text, or ``None``; never quotes it."""
    if "\x00" in value:
        return "contains a NUL character, which PostgreSQL text cannot hold"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"contains a lone surrogate (U+{ord(value[error.start]):04X}) at position"
            f" {error.start}, which is not Unicode text"
        )
    return None


def json_problem(value: object) -> tuple[str, str] | None:
    """Why ``value`` cannot be stored as ``scopes`` / ``account_metadata``, and the
    SQLSTATE PostgreSQL gives it (22023 too deep, 22P05 text jsonb cannot hold),
    or ``None``.

    Walks the value without recursion, so that a value nested far too deep is
    told, not a ``RecursionError``.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if level > MAX_JSON_DEPTH:
            return f"is nested deeper than {MAX_JSON_DEPTH} levels", "22023"
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return "has a string that " + problem, "22P05"
        elif isinstance(item, dict):
            for key, member in item.items():
                if isinstance(key, str) and (problem := text_problem(key)):
                    return "has a key that " + problem, "22P05"
                stack.append((member, level + 1))
        elif isinstance(item, list | tuple):
            stack.extend((member, level + 1) for member in item)
    return None


def _loads_stored(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        return UnparsedJson(data.decode("utf-8") if isinstance(data, bytes) else data)


class StoredJsonbLoader(JsonbLoader):
    """``jsonb`` as Python values; too deeply nested, as :class:`UnparsedJson`."""

    _loads = staticmethod(_loads_stored)


_TIMESTAMPTZ_OID = postgres.types["timestamptz"].oid
#: psycopg's own (C, with psycopg[binary]) loader, to which every value that
#: Python can hold goes.
_TimestamptzLoader = psycopg.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)


class StoredTimestamptzLoader(Loader):
    """``timestamptz`` as aware datetimes; beyond Python's years 1-9999 (and the
    infinities), :data:`START_OF_TIME` or :data:`END_OF_TIME`."""

    def __init__(self, oid: int, context: AdaptContext | None = None):
        super().__init__(oid, context)
        assert _TimestamptzLoader is not None
        self._inner = _TimestamptzLoader(oid, context)

    def load(self, data: Buffer) -> datetime:
        try:
            loaded: datetime = self._inner.load(data)
        except psycopg.DataError as error:
            text, reason = bytes(data).strip(), str(error)
            if text == b"infinity" or "too large" in reason:
                return END_OF_TIME
            if text == b"-infinity" or "too small" in reason:
                return START_OF_TIME
            raise
        return loaded


def register_stored_value_loaders(context: AdaptContext) -> None:
    """Read ``timestamptz`` and ``jsonb`` on ``context`` (a cursor) as the contract says."""
    context.adapters.register_loader("timestamptz", StoredTimestamptzLoader)
    context.adapters.register_loader("jsonb", StoredJsonbLoader)
