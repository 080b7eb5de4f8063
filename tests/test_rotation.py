"""Key rotation: every token re-encrypted under the new key, batch by batch, resumable.

Rows are inserted with plain SQL, their tokens encrypted under old keys as the
Laravel app would have written them.
"""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from cmis_repo import LaravelEncrypter, PermissionDeniedError
from cmis_repo.cli import main
from cmis_repo.rotation import RotationReport, rotate_keys
from tests.support.orgs import make_org


def new_key() -> str:
    return "base64:" + base64.b64encode(os.urandom(32)).decode()


OLD, OLDER, NEW, UNKNOWN = new_key(), new_key(), new_key(), new_key()
ROTATING = LaravelEncrypter(NEW, [OLD, OLDER])
NEW_ONLY = LaravelEncrypter(NEW)
UPDATED_AT = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
DELETED_AT = datetime(2022, 1, 1, tzinfo=UTC)

INSERT = """
    INSERT INTO cmis.platform_connections
        (connection_id, org_id, platform, account_id, access_token, refresh_token,
         created_at, updated_at, deleted_at)
    VALUES (%s, %s, 'meta', %s, %s, %s, %s, %s, %s)
"""
SELECT_ALL = """
    SELECT connection_id, access_token, refresh_token, updated_at, deleted_at
      FROM cmis.platform_connections ORDER BY connection_id
"""


class Rows:
    """Rows inserted by a test, and the plaintexts of their tokens."""

    def __init__(self) -> None:
        self.plain: dict[uuid.UUID, tuple[str | None, str | None]] = {}

    def insert(
        self,
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        access: str | None,
        refresh: str | None,
        *,
        key: str = OLD,
        deleted: bool = False,
        connection_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        cipher = LaravelEncrypter(key)
        connection_id = connection_id or uuid.uuid4()
        conn.execute(
            INSERT,
            (
                connection_id,
                org_id,
                f"acct_{connection_id.hex[:12]}",
                None if access is None else cipher.encrypt(access),
                None if refresh is None else cipher.encrypt(refresh),
                UPDATED_AT,
                UPDATED_AT,
                DELETED_AT if deleted else None,
            ),
        )
        self.plain[connection_id] = (access, refresh)
        return connection_id

    def many(self, conn: psycopg.Connection[Any], org_id: uuid.UUID, count: int, **kw: Any) -> None:
        for i in range(count):
            self.insert(conn, org_id, f"access-{i}-é/+", f"refresh-{i}", deleted=i % 3 == 0, **kw)


def stored(conn: psycopg.Connection[Any]) -> dict[uuid.UUID, tuple[Any, ...]]:
    return {row[0]: row[1:] for row in conn.execute(SELECT_ALL).fetchall()}


def fresh(conninfo: str) -> dict[uuid.UUID, tuple[Any, ...]]:
    """The committed state, seen from a new connection."""
    with psycopg.connect(conninfo) as conn:
        return stored(conn)


def assert_all_rotated(conninfo: str, rows: Rows) -> None:
    state = fresh(conninfo)
    assert set(state) == set(rows.plain)
    for connection_id, (access, refresh, updated_at, _) in state.items():
        assert updated_at == UPDATED_AT
        for value, plain in zip((access, refresh), rows.plain[connection_id], strict=True):
            if plain is None:
                assert value is None
            else:
                assert NEW_ONLY.uses_current_key(value)
                assert NEW_ONLY.decrypt(value) == plain


def assert_all_readable(conninfo: str, rows: Rows) -> None:
    for connection_id, (access, refresh, _, _) in fresh(conninfo).items():
        for value, plain in zip((access, refresh), rows.plain[connection_id], strict=True):
            assert (None if value is None else ROTATING.decrypt(value)) == plain


@pytest.fixture
def autocommit(conninfo):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield conn


# -- the function -------------------------------------------------------------------------------


def test_every_value_ends_under_the_new_key(db, conninfo, org_id, autocommit):
    other_org = make_org(db, "Other")
    rows = Rows()
    rows.many(db, org_id, 20)
    rows.many(db, other_org, 15, key=OLDER)
    rows.insert(db, org_id, "only access", None)
    rows.insert(db, other_org, None, "only refresh", deleted=True)
    rows.insert(db, org_id, None, None)
    db.commit()
    before = fresh(conninfo)

    reports: list[RotationReport] = []
    report = rotate_keys(autocommit, ROTATING, batch_size=7, progress=reports.append)

    assert_all_rotated(conninfo, rows)
    after = fresh(conninfo)
    for connection_id, (access, refresh, updated_at, deleted_at) in after.items():
        old_access, old_refresh, old_updated_at, old_deleted_at = before[connection_id]
        assert (updated_at, deleted_at) == (old_updated_at, old_deleted_at)
        assert access != old_access or access is None
        assert refresh != old_refresh or refresh is None
    assert sum(1 for row in after.values() if row[3] is not None) == 7 + 5 + 1  # deleted rows

    assert report.rows_scanned == 38
    assert report.rows_updated == 37
    assert report.values_reencrypted == 35 * 2 + 2
    assert report.values_null == 4
    assert report.values_already_current == 0
    assert report.undecryptable == ()
    assert report.batches == 6  # 38 rows by 7
    assert report.last_connection_id == max(rows.plain)
    assert reports[-1] == report
    assert [r.batches for r in reports] == [1, 2, 3, 4, 5, 6]
    assert [r.rows_scanned for r in reports] == [7, 14, 21, 28, 35, 38]
    assert [r.last_connection_id for r in reports] == [*sorted(rows.plain)[6::7], max(rows.plain)]


def test_a_second_run_changes_nothing(db, conninfo, org_id, autocommit):
    rows = Rows()
    rows.many(db, org_id, 10)
    db.commit()
    rotate_keys(autocommit, ROTATING, batch_size=4)
    rotated = fresh(conninfo)

    again = rotate_keys(autocommit, ROTATING, batch_size=4)
    assert fresh(conninfo) == rotated  # byte for byte
    assert again.values_already_current == 20
    assert again.values_reencrypted == again.rows_updated == 0


def test_a_batch_size_of_exactly_the_row_count(db, conninfo, org_id, autocommit):
    rows = Rows()
    rows.many(db, org_id, 5)
    db.commit()
    report = rotate_keys(autocommit, ROTATING, batch_size=5)
    # A full batch cannot tell it was the last one: one more, empty, look.
    assert (report.batches, report.rows_scanned) == (1, 5)
    assert_all_rotated(conninfo, rows)


def test_an_empty_table(autocommit):
    assert rotate_keys(autocommit, ROTATING) == RotationReport()


def test_undecryptable_values_are_left_byte_for_byte_and_reported(db, conninfo, org_id, autocommit):
    rows = Rows()
    rows.many(db, org_id, 6)
    lost = rows.insert(db, org_id, "lost access", "lost refresh", key=UNKNOWN)
    half = rows.insert(db, org_id, "half access", None, key=UNKNOWN)
    db.execute(
        "UPDATE cmis.platform_connections SET refresh_token = %s WHERE connection_id = %s",
        (LaravelEncrypter(OLD).encrypt("rotatable refresh"), half),
    )
    plain = rows.insert(db, org_id, None, None)
    db.execute(
        "UPDATE cmis.platform_connections SET access_token = 'not-a-payload' "
        "WHERE connection_id = %s",
        (plain,),
    )
    db.commit()
    before = fresh(conninfo)

    report = rotate_keys(autocommit, ROTATING, batch_size=3)

    after = fresh(conninfo)
    assert after[lost] == before[lost]
    assert after[plain] == before[plain]
    assert after[half][0] == before[half][0]  # the undecryptable access token: untouched
    assert NEW_ONLY.decrypt(after[half][1]) == "rotatable refresh"  # its row's other one: rotated
    found = {(v.connection_id, v.column) for v in report.undecryptable}
    assert found == {
        (lost, "access_token"),
        (lost, "refresh_token"),
        (half, "access_token"),
        (plain, "access_token"),
    }
    assert report.values_undecryptable == 4
    reasons = {v.reason for v in report.undecryptable}
    assert reasons == {
        "the MAC is invalid under the current key and 2 previous key(s)",
        "the payload is not valid base64",
    }
    for text in (repr(report), *map(str, report.undecryptable)):
        for value in before[lost][:2] + before[half][:1]:
            assert value not in text
        assert "lost access" not in text
    for connection_id in set(rows.plain) - {lost, half, plain}:
        assert NEW_ONLY.decrypt(after[connection_id][0]) == rows.plain[connection_id][0]


class Stop(Exception):
    pass


def test_an_interrupted_run_keeps_its_batches_and_resumes(db, conninfo, org_id, autocommit):
    rows = Rows()
    rows.many(db, org_id, 25)
    db.commit()
    seen: list[RotationReport] = []

    def stop_after_two_batches(report: RotationReport) -> None:
        seen.append(report)
        if report.batches == 2:
            raise Stop

    with pytest.raises(Stop):
        rotate_keys(autocommit, ROTATING, batch_size=4, progress=stop_after_two_batches)

    state = fresh(conninfo)
    ordered = sorted(state)
    for connection_id in ordered[:8]:  # the two committed batches
        assert all(NEW_ONLY.uses_current_key(v) for v in state[connection_id][:2])
    for connection_id in ordered[8:]:
        assert not any(NEW_ONLY.uses_current_key(v) for v in state[connection_id][:2])
    assert seen[-1].last_connection_id == ordered[7]
    assert_all_readable(conninfo, rows)

    report = rotate_keys(autocommit, ROTATING, batch_size=4)
    assert report.values_already_current == 16
    assert report.values_reencrypted == 34
    assert_all_rotated(conninfo, rows)


class FailingCipher:
    """LaravelEncrypter that raises on its n-th encryption: a crash in the middle of a batch."""

    def __init__(self, fail_at: int) -> None:
        self.calls, self.fail_at = 0, fail_at

    def encrypt(self, plaintext: str) -> str:
        self.calls += 1
        if self.calls == self.fail_at:
            raise Stop
        return ROTATING.encrypt(plaintext)

    def decrypt(self, payload: str) -> str:
        return ROTATING.decrypt(payload)

    def uses_current_key(self, payload: str) -> bool:
        return ROTATING.uses_current_key(payload)


def test_a_crash_inside_a_batch_rolls_that_batch_back(db, conninfo, org_id, autocommit):
    rows = Rows()
    rows.many(db, org_id, 20)
    db.commit()
    before = fresh(conninfo)

    # Batches of 5 rows, 10 values each: fail on the 5th value of the third batch.
    with pytest.raises(Stop):
        rotate_keys(autocommit, FailingCipher(fail_at=25), batch_size=5)

    assert autocommit.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    state = fresh(conninfo)
    ordered = sorted(state)
    for connection_id in ordered[:10]:
        assert all(NEW_ONLY.uses_current_key(v) for v in state[connection_id][:2])
    for connection_id in ordered[10:]:
        assert state[connection_id] == before[connection_id]  # the failed batch wrote nothing
    assert_all_readable(conninfo, rows)

    rotate_keys(autocommit, ROTATING, batch_size=5)
    assert_all_rotated(conninfo, rows)


def test_a_concurrent_writer_under_the_new_key_is_fine(db, conninfo, org_id, autocommit):
    rows = Rows()
    rows.many(db, org_id, 12)
    db.commit()
    ordered = sorted(rows.plain)
    last_batch_row = ordered[-1]
    written: dict[str, Any] = {}

    with psycopg.connect(conninfo, autocommit=True) as app:

        def app_writes(report: RotationReport) -> None:
            if report.batches != 1:
                return
            # The app, already on the new key, reconnects a row the run has not reached yet...
            token = NEW_ONLY.encrypt("fresh from the app")
            app.execute(
                "UPDATE cmis.platform_connections SET access_token = %s WHERE connection_id = %s",
                (token, last_batch_row),
            )
            rows.plain[last_batch_row] = ("fresh from the app", rows.plain[last_batch_row][1])
            written["updated"] = token
            # ...and connects new accounts, behind and ahead of the run's position.
            behind = uuid.UUID(int=1)
            ahead = uuid.UUID(int=2**128 - 1)
            for connection_id in (behind, ahead):
                rows.insert(app, org_id, "new", "new", key=NEW, connection_id=connection_id)
                written[str(connection_id)] = stored(app)[connection_id]

        report = rotate_keys(autocommit, ROTATING, batch_size=4, progress=app_writes)

    state = fresh(conninfo)
    assert state[last_batch_row][0] == written["updated"]  # already current: kept
    ahead_id, behind_id = uuid.UUID(int=2**128 - 1), uuid.UUID(int=1)
    assert state[ahead_id] == written[str(ahead_id)]
    assert state[behind_id] == written[str(behind_id)]
    assert report.rows_scanned == 13  # the row ahead was seen, the one behind was not
    assert report.values_already_current == 3  # the app's update and the row ahead
    assert_all_rotated(conninfo, rows)


def test_a_connection_not_in_autocommit_commits_each_batch(db, conninfo, org_id):
    rows = Rows()
    rows.many(db, org_id, 6)
    db.commit()

    def check_committed(report: RotationReport) -> None:
        state = fresh(conninfo)  # another connection sees the batch
        assert report.last_connection_id is not None
        assert NEW_ONLY.uses_current_key(state[report.last_connection_id][0])

    rotate_keys(db, ROTATING, batch_size=2, progress=check_committed)
    assert_all_rotated(conninfo, rows)


def test_refuses_a_connection_inside_a_transaction(db, org_id):
    db.execute("SELECT 1")
    with pytest.raises(ValueError, match="not inside a transaction"):
        rotate_keys(db, ROTATING)


def test_refuses_a_batch_size_below_one(autocommit):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        rotate_keys(autocommit, ROTATING, batch_size=0)


@pytest.fixture
def rls_role(db):
    """A login role without BYPASSRLS that may read and write the table, RLS forced on it."""
    role = f"cmis_rot_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA cmis TO {}").format(ident))
    db.execute(sql.SQL("GRANT SELECT, UPDATE ON cmis.platform_connections TO {}").format(ident))
    db.execute("ALTER TABLE cmis.platform_connections ENABLE ROW LEVEL SECURITY")
    db.execute("ALTER TABLE cmis.platform_connections FORCE ROW LEVEL SECURITY")
    db.execute(
        """CREATE POLICY org_isolation ON cmis.platform_connections
               USING (org_id = current_setting('app.current_org_id', true)::uuid)"""
    )
    db.commit()
    yield role
    db.rollback()
    db.execute(sql.SQL("DROP OWNED BY {}").format(ident))
    db.execute(sql.SQL("DROP ROLE {}").format(ident))
    db.commit()


def test_a_role_subject_to_row_level_security_is_refused(db, conninfo, org_id, rls_role):
    rows = Rows()
    rows.many(db, org_id, 3)
    db.commit()
    before = fresh(conninfo)
    with psycopg.connect(conninfo, user=rls_role, autocommit=True) as conn:
        # The role sees this organisation's rows only; rotating them alone would be a silent
        # half-rotation, so the run is refused outright.
        conn.execute("SELECT set_config('app.current_org_id', %s, false)", (str(org_id),))
        with pytest.raises(PermissionDeniedError) as caught:
            rotate_keys(conn, ROTATING)
    assert caught.value.sqlstate == "42501"
    assert "row-level security" in str(caught.value)
    # Not even the psycopg error (whose DETAIL may list a row) is kept as its context.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert fresh(conninfo) == before


def test_a_superuser_rotates_despite_forced_row_level_security(db, conninfo, org_id, rls_role):
    rows = Rows()
    rows.many(db, org_id, 3)
    rows.many(db, make_org(db, "Other"), 3)
    db.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert rotate_keys(conn, ROTATING).rows_scanned == 6
    assert_all_rotated(conninfo, rows)


# -- the command --------------------------------------------------------------------------------


def run_cli(conninfo: str, *args: str, **env: str | None) -> Any:
    environ: dict[str, str | None] = {
        "DATABASE_URL": conninfo,
        "APP_KEY": NEW,
        "APP_PREVIOUS_KEYS": f"{OLD},{OLDER}",
        **env,
    }
    return CliRunner().invoke(main, ["rotate-keys", *args], env=environ, catch_exceptions=False)


def assert_no_secrets(text: str, *values: str) -> None:
    for secret in (OLD, OLDER, NEW, UNKNOWN, *values):
        assert secret.removeprefix("base64:") not in text


def test_cli_rotates_and_prints_a_summary(db, conninfo, org_id):
    rows = Rows()
    rows.many(db, org_id, 9)
    rows.insert(db, org_id, "older", None, key=OLDER)
    db.commit()
    before = fresh(conninfo)

    result = run_cli(conninfo, "--batch-size", "4")

    assert result.exit_code == 0, result.output
    assert "rows scanned:          10" in result.stdout
    assert "values re-encrypted:   19" in result.stdout
    assert "already current:       0" in result.stdout
    assert "undecryptable:         0" in result.stdout
    assert f"last committed connection_id: {max(rows.plain)}" in result.stdout
    # Not a terminal: one line per committed batch on stderr, instead of a progress bar.
    assert result.stderr.count("last committed connection_id") == 3
    assert "batch 3: 10/10 rows" in result.stderr
    assert_all_rotated(conninfo, rows)
    stored_values = [v for row in before.values() for v in row[:2] if v]
    assert_no_secrets(
        result.output, *stored_values, *(v for p in rows.plain.values() for v in p if v)
    )

    again = run_cli(conninfo)
    assert again.exit_code == 0, again.output
    assert "already current:       19" in again.stdout


def test_cli_reports_undecryptable_values_with_exit_status_1(db, conninfo, org_id):
    rows = Rows()
    rows.many(db, org_id, 3)
    lost = rows.insert(db, org_id, "lost access", "lost refresh", key=UNKNOWN)
    db.commit()
    before = fresh(conninfo)

    result = run_cli(conninfo)

    assert result.exit_code == 1
    assert "undecryptable:         2" in result.stdout
    assert f"{lost} access_token: the MAC is invalid" in result.stdout
    assert f"{lost} refresh_token: the MAC is invalid" in result.stdout
    assert fresh(conninfo)[lost] == before[lost]
    assert_no_secrets(result.output, *before[lost][:2], "lost access", "lost refresh")


def test_cli_without_app_key(conninfo):
    result = run_cli(conninfo, APP_KEY=None)
    assert result.exit_code == 2
    assert "APP_KEY is not set" in result.stderr


def test_cli_with_a_malformed_previous_key(conninfo):
    short = "base64:" + base64.b64encode(b"0123456789abcdef").decode()
    result = run_cli(conninfo, APP_PREVIOUS_KEYS=f"{OLD},{short}")
    assert result.exit_code == 2
    assert "APP_PREVIOUS_KEYS entry 2 must be 32 bytes" in result.stderr
    assert_no_secrets(result.output, short)


def test_cli_refuses_a_role_subject_to_row_level_security(db, conninfo, org_id, rls_role):
    rows = Rows()
    rows.many(db, org_id, 2)
    db.commit()
    before = fresh(conninfo)
    as_role = psycopg.conninfo.make_conninfo(conninfo, user=rls_role)
    result = run_cli(as_role)
    assert result.exit_code == 2
    assert "row-level security" in result.stderr
    assert "BYPASSRLS" in result.stderr
    assert fresh(conninfo) == before


def test_cli_interrupted_says_where_it_stopped(db, conninfo, org_id, monkeypatch):
    rows = Rows()
    rows.many(db, org_id, 10)
    db.commit()

    def interrupted_after_one_batch(conn, cipher, *, batch_size, progress):
        def on_batch(report: RotationReport) -> None:
            progress(report)
            raise KeyboardInterrupt  # Ctrl-C once the first batch has committed

        return rotate_keys(conn, cipher, batch_size=batch_size, progress=on_batch)

    monkeypatch.setattr("cmis_repo.cli.rotate_keys", interrupted_after_one_batch)
    result = run_cli(conninfo, "--batch-size", "4")

    assert result.exit_code == 130
    first_batch = sorted(rows.plain)[:4]
    assert "rows scanned:          4" in result.stdout
    assert f"last committed connection_id: {first_batch[-1]}" in result.stdout
    assert "interrupted; committed batches stay, run rotate-keys again to resume" in result.stderr
    assert_all_readable(conninfo, rows)

    monkeypatch.undo()
    resumed = run_cli(conninfo)
    assert resumed.exit_code == 0, resumed.output
    assert "already current:       8" in resumed.stdout
    assert_all_rotated(conninfo, rows)
