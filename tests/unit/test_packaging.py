"""The distribution ships every subpackage and the schemas."""

from __future__ import annotations

import tomllib
from importlib import metadata, resources
from pathlib import Path

import bundler

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bundler").rglob("__init__.py")
    }
    assert found | {"bundler.schemas"} == listed


def test_schemas_are_package_data() -> None:
    names = {p.name for p in resources.files("bundler.schemas").iterdir()}
    on_disk = {p.name for p in (ROOT / "schemas").glob("*.json")}
    assert on_disk <= names
    assert {
        "bundle-config.schema.json",
        "bundle-lock.schema.json",
        "copy-result.schema.json",
    } <= on_disk


def test_the_version_has_one_source() -> None:
    """pyproject reads the version from bundler/__init__.py; the metadata agrees with it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bundler.__version__"}
    assert metadata.version("airgap-bundler") == bundler.__version__


def test_typed_marker_license_and_changelog_ship() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["bundler"]
    assert (ROOT / "bundler" / "py.typed").is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{bundler.__version__}]" in changelog
