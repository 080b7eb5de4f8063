"""Install the PL/pgSQL functions of sql/procedures/; the rollback drops them.

The functions change more often than the schema: the project's migrate
command (`cmis-repo migrate`, `make migrate`) installs the files' current
text after every run, and so does post-apply.py whenever yoyo applies a
migration. Changing a function's signature needs a migration of its own that
drops the old one.
"""

from pathlib import Path

from yoyo import step

from cmis_repo.procedures import drop_procedures, install_procedures

__depends__ = {"0002_adopt_platform_connections"}

PROCEDURES = Path(__file__).resolve().parent.parent / "procedures"

steps = [
    step(
        lambda conn: install_procedures(conn, PROCEDURES),
        lambda conn: drop_procedures(conn, PROCEDURES),
    )
]
