"""The Python repository against a real database: outcomes, reads, scoping, transactions."""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import pq

import cmis_repo
from cmis_repo import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    Outcome,
    PlatformConnection,
    PlatformConnectionRepository,
    RepositoryError,
    UnknownOrganisationError,
)
from tests.support.orgs import make_org


@pytest.fixture
def repo(db):
    return PlatformConnectionRepository(db)


def count_rows(conn, org_id):
    return conn.execute(
        "SELECT count(*) FROM cmis.platform_connections WHERE org_id = %s", (org_id,)
    ).fetchone()[0]


def test_package_root_exports_the_public_api():
    for name in [
        "PlatformConnectionRepository",
        "Outcome",
        "RepositoryError",
        "InvalidInputError",
        "UnknownOrganisationError",
        "NotFoundError",
        "ConflictError",
        "PlatformConnection",
        "UpsertResult",
    ]:
        assert name in cmis_repo.__all__
        assert hasattr(cmis_repo, name)
    for cls in (InvalidInputError, UnknownOrganisationError, NotFoundError, ConflictError):
        assert issubclass(cls, RepositoryError)


def test_outcome_is_a_str_enum():
    assert str(Outcome.RESTORED) == "restored"
    assert Outcome("restored") is Outcome.RESTORED
    assert {o.value for o in Outcome} == {"created", "restored", "updated"}


def test_create_then_update_then_restore(repo, org_id):
    created = repo.upsert(
        org_id,
        "meta",
        "act_1",
        account_name="Main account",
        access_token="a1",
        refresh_token="r1",
        scopes=["ads_read", "ads_management"],
        account_metadata={"currency": "EUR"},
        sync_frequency_minutes=30,
    )
    assert created.outcome is Outcome.CREATED
    row = created.connection
    assert isinstance(row, PlatformConnection)
    assert (row.platform, row.account_id, row.account_name) == ("meta", "act_1", "Main account")
    assert row.status == "active"
    assert row.scopes == ["ads_read", "ads_management"]
    assert row.account_metadata == {"currency": "EUR"}
    assert row.sync_frequency_minutes == 30
    assert row.auto_sync is True
    assert row.deleted_at is None
    assert row.created_at == row.updated_at

    updated = repo.upsert(org_id, "meta", "act_1", status="warning", access_token="a2")
    assert updated.outcome is Outcome.UPDATED
    assert updated.connection.connection_id == row.connection_id
    assert updated.connection.status == "warning"
    assert updated.connection.access_token == "a2"
    # None keeps what is stored.
    assert updated.connection.refresh_token == "r1"
    assert updated.connection.account_name == "Main account"
    assert updated.connection.scopes == ["ads_read", "ads_management"]
    assert updated.connection.updated_at > row.updated_at

    assert repo.soft_delete(org_id, row.connection_id) is True
    restored = repo.upsert(org_id, "meta", "act_1", access_token="a3")
    assert restored.outcome is Outcome.RESTORED
    assert restored.connection.connection_id == row.connection_id
    assert restored.connection.created_at == row.created_at
    assert restored.connection.deleted_at is None
    assert restored.connection.status == "active"  # a reconnect re-activates
    assert restored.connection.access_token == "a3"
    assert count_rows(repo._conn, org_id) == 1


def test_status_none_keeps_the_stored_status(repo, org_id):
    repo.upsert(org_id, "google", "g1", status="expired")
    again = repo.upsert(org_id, "google", "g1", status=None)
    assert again.connection.status == "expired"


def test_restore_picks_the_most_recently_deleted_row(db, repo, org_id):
    # History rows such as the app's old update-or-create left behind.
    older, newer = uuid.uuid4(), uuid.uuid4()
    db.execute(
        """INSERT INTO cmis.platform_connections
               (connection_id, org_id, platform, account_id, deleted_at)
           VALUES (%s, %s, 'tiktok', 't1', now() - interval '2 days'),
                  (%s, %s, 'tiktok', 't1', now() - interval '1 day')""",
        (older, org_id, newer, org_id),
    )
    result = repo.upsert(org_id, "tiktok", "t1")
    assert result.outcome is Outcome.RESTORED
    assert result.connection.connection_id == newer
    assert repo.get(org_id, older, include_deleted=True).is_deleted


def test_get_and_list_are_scoped_by_org(db, repo, org_id):
    """One organisation per transaction: commit before acting for another."""
    other_org = make_org(db, "Other")
    mine = repo.upsert(org_id, "meta", "shared_id").connection
    db.commit()
    theirs = repo.upsert(other_org, "meta", "shared_id").connection
    db.commit()
    assert mine.connection_id != theirs.connection_id

    assert repo.get(org_id, mine.connection_id) == mine
    assert repo.get(org_id, theirs.connection_id) is None
    assert repo.get(org_id, theirs.connection_id, include_deleted=True) is None
    assert [c.connection_id for c in repo.list(org_id)] == [mine.connection_id]
    # Neither can delete, restore or purge the other's rows.
    assert repo.soft_delete(org_id, theirs.connection_id) is False
    with pytest.raises(NotFoundError):
        repo.restore(org_id, theirs.connection_id)
    db.commit()
    assert repo.get(other_org, theirs.connection_id) == theirs


def test_list_filters_by_platform_and_deleted(repo, org_id):
    a = repo.upsert(org_id, "meta", "a").connection
    b = repo.upsert(org_id, "google", "b").connection
    c = repo.upsert(org_id, "meta", "c").connection
    repo.soft_delete(org_id, c.connection_id)

    assert [x.connection_id for x in repo.list(org_id)] == [b.connection_id, a.connection_id]
    assert [x.connection_id for x in repo.list(org_id, platform="meta")] == [a.connection_id]
    everything = repo.list(org_id, include_deleted=True)
    assert [x.connection_id for x in everything] == [
        b.connection_id,
        a.connection_id,
        c.connection_id,
    ]
    assert everything[-1].is_deleted
    assert repo.list(org_id, platform="linkedin") == []


def test_get_hides_deleted_rows_unless_asked(repo, org_id):
    row = repo.upsert(org_id, "meta", "a").connection
    repo.soft_delete(org_id, row.connection_id)
    assert repo.get(org_id, row.connection_id) is None
    deleted = repo.get(org_id, row.connection_id, include_deleted=True)
    assert deleted is not None
    assert deleted.deleted_at is not None
    assert repo.get(org_id, uuid.uuid4(), include_deleted=True) is None


def test_soft_delete_twice_returns_false(repo, org_id):
    row = repo.upsert(org_id, "meta", "a").connection
    assert repo.soft_delete(org_id, row.connection_id) is True
    assert repo.soft_delete(org_id, row.connection_id) is False
    assert repo.soft_delete(org_id, uuid.uuid4()) is False


def test_restore_by_id(repo, org_id):
    row = repo.upsert(org_id, "meta", "a", access_token="tok").connection
    repo.soft_delete(org_id, row.connection_id)
    restored = repo.restore(org_id, row.connection_id)
    assert restored.connection_id == row.connection_id
    assert restored.deleted_at is None
    assert restored.access_token == "tok"
    # Restoring a live row returns it unchanged.
    assert repo.restore(org_id, row.connection_id) == restored
    with pytest.raises(NotFoundError):
        repo.restore(org_id, uuid.uuid4())


def test_restore_refuses_when_another_live_row_holds_the_key(db, repo, org_id):
    old = repo.upsert(org_id, "meta", "a").connection
    repo.soft_delete(org_id, old.connection_id)
    # The app's unfixed update-or-create inserted a fresh row meanwhile.
    db.execute(
        "INSERT INTO cmis.platform_connections (org_id, platform, account_id) "
        "VALUES (%s, 'meta', 'a')",
        (org_id,),
    )
    with pytest.raises(ConflictError) as caught:
        repo.restore(org_id, old.connection_id)
    assert caught.value.sqlstate == "23505"
    assert "another live connection" in str(caught.value)


def test_purge_hard_deletes_only_old_soft_deleted_rows_of_the_org(db, repo, org_id):
    other_org = make_org(db, "Other")
    live = repo.upsert(org_id, "meta", "live").connection
    old = repo.upsert(org_id, "meta", "old").connection
    recent = repo.upsert(org_id, "meta", "recent").connection
    repo.soft_delete(org_id, old.connection_id)
    repo.soft_delete(org_id, recent.connection_id)
    db.commit()  # one organisation per transaction
    theirs = repo.upsert(other_org, "meta", "old").connection
    repo.soft_delete(other_org, theirs.connection_id)
    db.commit()
    db.execute(
        "UPDATE cmis.platform_connections SET deleted_at = now() - interval '40 days' "
        "WHERE connection_id = ANY(%s)",
        ([old.connection_id, theirs.connection_id],),
    )

    assert repo.purge(org_id, older_than=timedelta(days=30)) == 1
    assert repo.get(org_id, old.connection_id, include_deleted=True) is None
    assert repo.get(org_id, recent.connection_id, include_deleted=True) is not None
    assert repo.get(org_id, live.connection_id) is not None
    db.commit()
    assert repo.get(other_org, theirs.connection_id, include_deleted=True) is not None
    db.commit()
    assert repo.purge(org_id, older_than=timedelta(days=30)) == 0
    assert repo.purge(org_id, older_than=timedelta(0)) == 1


def test_purge_rejects_a_negative_age(repo, org_id):
    with pytest.raises(InvalidInputError):
        repo.purge(org_id, older_than=timedelta(days=-1))


def test_callers_rollback_undoes_the_librarys_writes(db, repo, org_id):
    row = repo.upsert(org_id, "meta", "a").connection
    db.commit()
    repo.soft_delete(org_id, row.connection_id)
    repo.upsert(org_id, "google", "new")
    db.rollback()
    assert repo.get(org_id, row.connection_id) == row
    assert repo.list(org_id, platform="google") == []


def test_nothing_commits_behind_the_callers_back(repo, org_id, connect):
    repo.upsert(org_id, "meta", "a")
    other = connect(autocommit=True)
    assert count_rows(other, org_id) == 0


def test_works_on_an_autocommit_connection(connect, org_id):
    conn = connect(autocommit=True)
    repo = PlatformConnectionRepository(conn)
    row = repo.upsert(org_id, "meta", "a").connection
    assert repo.soft_delete(org_id, row.connection_id)
    assert repo.upsert(org_id, "meta", "a").outcome is Outcome.RESTORED
    with connect(autocommit=True) as observer:
        assert count_rows(observer, org_id) == 1


def round_trips(conn, action) -> int:
    """How many times the client waited for the server during ``action``.

    libpq's protocol trace lists every message; each round trip ends with the
    client's Sync (extended protocol) or Query (simple protocol) message.
    """
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            action()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        messages = [line.split("\t") for line in trace.read().splitlines()]
    return sum(1 for m in messages if len(m) > 2 and m[0] == "F" and m[2] in {"Sync", "Query"})


def test_upsert_is_one_database_round_trip(connect, org_id):
    # Autocommit, so that psycopg's own BEGIN (sent before the first statement
    # of a transaction, one extra round trip) is not counted against us.
    conn = connect(autocommit=True)
    repo = PlatformConnectionRepository(conn)
    assert round_trips(conn, lambda: repo.upsert(org_id, "meta", "a")) == 1  # created
    assert round_trips(conn, lambda: repo.upsert(org_id, "meta", "a")) == 1  # updated
    row = repo.upsert(org_id, "meta", "a").connection
    assert round_trips(conn, lambda: repo.soft_delete(org_id, row.connection_id)) == 1
    result = None

    def restore() -> None:
        nonlocal result
        result = repo.upsert(org_id, "meta", "a")

    assert round_trips(conn, restore) == 1
    assert result is not None
    assert result.outcome is Outcome.RESTORED


def test_unknown_org_maps_to_its_error(repo):
    with pytest.raises(UnknownOrganisationError) as caught:
        repo.upsert(uuid.uuid4(), "meta", "a")
    assert caught.value.sqlstate == "23503"
    assert "cmis.orgs" in str(caught.value)


def test_connection_dataclass_is_frozen(repo, org_id):
    row = repo.upsert(org_id, "meta", "a").connection
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.status = "revoked"


def test_token_expiry_round_trips_as_aware_datetime(repo, org_id):
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    row = repo.upsert(org_id, "meta", "a", token_expires_at=expires).connection
    assert row.token_expires_at == expires


def test_rows_with_extra_app_columns_still_load(db, repo, org_id):
    """An adopted table may carry columns of the app's own; they are ignored."""
    db.execute("ALTER TABLE cmis.platform_connections ADD COLUMN created_by bigint")
    row = repo.upsert(org_id, "meta", "a").connection
    assert repo.get(org_id, row.connection_id) == row
    assert repo.soft_delete(org_id, row.connection_id)
