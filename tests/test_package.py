"""The package as users install it: its version, licence and changelog."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import cmis_repo

ROOT = Path(__file__).resolve().parent.parent


def test_version_comes_from_the_package_metadata():
    assert cmis_repo.__version__ == version("cmis-repo")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cmis_repo.__version__ == project["version"]


def test_the_licence_file_is_the_one_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_changelog_has_the_current_version_and_unreleased_changes():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{cmis_repo.__version__}]" in changelog
