"""Organisations for tests."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg


def make_org(conn: psycopg.Connection[Any], name: str = "Acme") -> uuid.UUID:
    """Insert and commit an organisation; return its id."""
    new_id = uuid.uuid4()
    conn.execute("INSERT INTO cmis.orgs (org_id, name) VALUES (%s, %s)", (new_id, name))
    conn.commit()
    return new_id
