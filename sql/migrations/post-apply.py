"""After yoyo applies any migration, install the current sql/procedures/ files.

yoyo runs this hook only when it applied something; `cmis-repo migrate` runs
it every time, so that an edited function ships even with no new migration.
"""

from pathlib import Path

from yoyo import step

from cmis_repo.procedures import install_procedures

PROCEDURES = Path(__file__).resolve().parent.parent / "procedures"

steps = [step(lambda conn: install_procedures(conn, PROCEDURES))]
