"""A connection lost under a call is ConnectionLostError, saying so (and
whether the call's outcome is unknown), never a bare RepositoryError."""

from __future__ import annotations

import os
import socket

import pytest

import cmis_repo
from cmis_repo import ConnectionLostError, PlatformConnectionRepository, RepositoryError


def _drop_socket(conn) -> None:
    """Cut the connection's TCP socket under it, as a dropped network does."""
    duplicate = socket.socket(fileno=os.dup(conn.pgconn.socket))
    duplicate.shutdown(socket.SHUT_RDWR)
    duplicate.close()


def _kill_backend(monitor, conn) -> None:
    monitor.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


@pytest.mark.parametrize("cut", [_drop_socket, _kill_backend], ids=["socket", "backend"])
@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transaction"])
def test_a_lost_connection_says_so(connect, monitor, org_id, cut, autocommit):
    conn = connect(autocommit=autocommit)
    repo = PlatformConnectionRepository(conn)
    repo.upsert(org_id, "meta", "act_1")
    if cut is _kill_backend:
        cut(monitor, conn)
    else:
        cut(conn)
    with pytest.raises(ConnectionLostError) as raised:
        repo.upsert(org_id, "meta", "act_1")
    error = raised.value
    assert isinstance(error, RepositoryError)
    assert "connection to PostgreSQL was lost" in str(error)
    if autocommit:
        assert "unknown" in str(error)
    else:
        assert "rolled back" in str(error)
    assert error.__context__ is None
    assert error.__cause__ is None
    assert conn.broken


def test_connection_lost_error_is_exported():
    assert "ConnectionLostError" in cmis_repo.__all__
    assert issubclass(cmis_repo.ConnectionLostError, cmis_repo.RepositoryError)
