"""Run the pgTAP scripts of tests/sql/ with psql, one test per file.

Each script is what a user would type into psql: BEGIN, CREATE EXTENSION
pgtap, plan(n), the calls and their checks, finish(), ROLLBACK. It runs
against the per-test clone of the migrated template database. A test fails,
showing psql's whole output, when psql exits non-zero, when any TAP line is
``not ok``, or when the number of tests run differs from the plan.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

SQL_DIR = Path(__file__).resolve().parent / "sql"
SCRIPTS = sorted(SQL_DIR.glob("*.sql"))

_PLAN = re.compile(r"^1\.\.(\d+)\s*$")
_RESULT = re.compile(r"^(not )?ok (\d+)\b(.*)$")
_BAIL_OUT = re.compile(r"^Bail out!")


@dataclass
class TapReport:
    """What a TAP stream says: the plan, and every test line."""

    plans: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bailed_out: bool = False

    def problems(self) -> list[str]:
        """Everything that makes the stream a failure; empty when it passed."""
        found: list[str] = []
        if self.bailed_out:
            found.append("the script bailed out")
        if not self.plans:
            found.append("no plan line (1..N): did plan() run?")
        elif len(self.plans) > 1:
            found.append(f"{len(self.plans)} plan lines")
        elif self.plans[0] != len(self.numbers):
            found.append(f"planned {self.plans[0]} tests but ran {len(self.numbers)}")
        if self.numbers != list(range(1, len(self.numbers) + 1)):
            found.append(f"test numbers are not 1..{len(self.numbers)} in order")
        if self.plans and self.plans[0] == 0:
            found.append("the plan is empty")
        found.extend(f"failed: {line}" for line in self.failed)
        return found


def parse_tap(output: str) -> TapReport:
    """Read psql's output of a pgTAP script (unaligned, tuples only)."""
    report = TapReport()
    for line in output.splitlines():
        if plan := _PLAN.match(line):
            report.plans.append(int(plan.group(1)))
        elif result := _RESULT.match(line):
            report.numbers.append(int(result.group(2)))
            if result.group(1):
                report.failed.append(line)
        elif _BAIL_OUT.match(line):
            report.bailed_out = True
    return report


def test_parse_tap_accepts_a_passing_stream():
    report = parse_tap("1..2\nok 1 - a\nok 2 - b\n")
    assert report.problems() == []


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        pytest.param(
            "1..2\nok 1 - a\nnot ok 2 - b\n# Failed test 2\n", "failed: not ok 2 - b", id="not-ok"
        ),
        pytest.param("1..3\nok 1 - a\nok 2 - b\n", "planned 3 tests but ran 2", id="too-few"),
        pytest.param("1..1\nok 1 - a\nok 2 - b\n", "planned 1 tests but ran 2", id="too-many"),
        pytest.param("ok 1 - a\n", "no plan line (1..N): did plan() run?", id="no-plan"),
        pytest.param("1..1\nBail out! broken\n", "the script bailed out", id="bail-out"),
        pytest.param("", "no plan line (1..N): did plan() run?", id="no-output"),
    ],
)
def test_parse_tap_reports_a_failing_stream(output, problem):
    assert problem in parse_tap(output).problems()


def _require_pgtap(conninfo: str) -> None:
    """Fail (never skip) when psql or the pgtap extension is missing."""
    if shutil.which("psql") is None:
        pytest.fail("psql is not on PATH: install postgresql-client to run the pgTAP tests")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        major = conn.info.server_version // 10000
        available = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pgtap')"
        ).fetchone()
    if not (available and available[0]):
        pytest.fail(
            f"the pgtap extension is not available on the PostgreSQL {major} server: "
            f"install it (Debian/Ubuntu: apt-get install postgresql-{major}-pgtap), "
            "then run the tests again",
            pytrace=False,
        )


def run_psql_script(conninfo: str, script: Path) -> subprocess.CompletedProcess[str]:
    """Run one script as a user would: psql, no psqlrc, stop at the first error."""
    return subprocess.run(
        [
            "psql",
            "-X",
            "--no-psqlrc",
            "-v",
            "ON_ERROR_STOP=1",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--pset=pager=off",
            "-d",
            conninfo,
            "-f",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_there_are_pgtap_scripts():
    assert SCRIPTS, f"no pgTAP scripts in {SQL_DIR}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_pgtap_script(conninfo, script):
    _require_pgtap(conninfo)
    result = run_psql_script(conninfo, script)
    report = parse_tap(result.stdout)
    problems = report.problems()
    if result.returncode != 0:
        problems.insert(0, f"psql exited with status {result.returncode}")
    if problems:
        pytest.fail(
            f"{script.name}:\n  "
            + "\n  ".join(problems)
            + f"\n--- psql stdout ---\n{result.stdout}--- psql stderr ---\n{result.stderr}",
            pytrace=False,
        )


def test_runner_catches_a_script_that_does_not_keep_its_plan(conninfo, tmp_path):
    """The runner itself: a failing test and a wrong plan are caught, not passed over."""
    _require_pgtap(conninfo)
    script = tmp_path / "broken.sql"
    script.write_text(
        "BEGIN;\nCREATE EXTENSION IF NOT EXISTS pgtap;\nSELECT plan(3);\n"
        "SELECT ok(true, 'fine');\nSELECT is(1, 2, 'one is two');\n"
        "SELECT * FROM finish();\nROLLBACK;\n",
        encoding="utf-8",
    )
    result = run_psql_script(conninfo, script)
    assert result.returncode == 0, result.stderr
    problems = parse_tap(result.stdout).problems()
    assert "planned 3 tests but ran 2" in problems
    assert "failed: not ok 2 - one is two" in problems


def test_runner_catches_a_script_that_errors(conninfo, tmp_path):
    _require_pgtap(conninfo)
    script = tmp_path / "error.sql"
    script.write_text(
        "BEGIN;\nCREATE EXTENSION IF NOT EXISTS pgtap;\nSELECT plan(1);\n"
        "SELECT * FROM cmis.no_such_function();\nSELECT ok(true);\nROLLBACK;\n",
        encoding="utf-8",
    )
    result = run_psql_script(conninfo, script)
    assert result.returncode != 0
    assert "no_such_function" in result.stderr
