"""Load the repository's SQL from ``queries.sql``.

The file holds one statement per ``-- name: <name>`` header; statements use
psycopg's ``%(name)s`` placeholders.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString, cast

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, LiteralString]:
    """Split ``text`` into named statements; raise ``ValueError`` on a repeated name."""
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        # The text comes from a file shipped inside this package, never from a caller.
        queries[name] = cast(LiteralString, body.strip().rstrip(";"))
    return queries


@cache
def load() -> dict[str, LiteralString]:
    """The statements of the package's ``queries.sql``, by name."""
    return parse(resources.files("cmis_repo").joinpath("queries.sql").read_text("utf-8"))


def query(name: str) -> LiteralString:
    """One statement of ``queries.sql``; ``KeyError`` if there is none by that name."""
    return load()[name]
