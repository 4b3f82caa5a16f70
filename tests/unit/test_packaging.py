"""The distribution ships every subpackage and the schemas."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

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
