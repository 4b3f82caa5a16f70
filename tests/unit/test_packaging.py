"""The distribution ships every subpackage and the schemas."""

from __future__ import annotations

import tomllib
from importlib import metadata, resources
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """requirements/NAME: {canonical name: (pinned version, its hashes)}."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = (ROOT / "requirements" / name).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        spec, *hashes = line.split(" --hash=")
        if not spec.strip() or spec.lstrip().startswith(("#", "-")):
            continue
        req = Requirement(spec.strip())
        (pin,) = req.specifier
        assert pin.operator == "==", f"{name}: {spec.strip()} is not an exact pin"
        pins[canonicalize_name(req.name)] = (pin.version, [h.strip() for h in hashes])
    return pins


def test_the_lock_pins_every_dependency_within_its_range_with_hashes() -> None:
    """requirements/run.txt and test.txt (ADR 0008) agree with pyproject.toml's ranges."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]  # the lock installs [pkcs11] in both
    run, test = _lock("run.txt"), _lock("test.txt")
    for lock_name, lock, declared in (
        ("run.txt", run, project["dependencies"] + extras["pkcs11"]),
        ("test.txt", test, project["dependencies"] + extras["pkcs11"] + extras["test"]),
    ):
        for spec in declared:
            req = Requirement(spec)
            name = str(canonicalize_name(req.name))
            assert name in lock, f"{req.name} is not pinned in requirements/{lock_name}"
            assert req.specifier.contains(Version(lock[name][0]), prereleases=True), (
                f"requirements/{lock_name} pins {name}=={lock[name][0]}, outside {spec}"
            )
        for name, (version, hashes) in lock.items():
            assert hashes, f"{name}=={version} has no --hash in requirements/{lock_name}"
            assert all(h.startswith("sha256:") and len(h) == 71 for h in hashes), name
    # test.txt is run.txt plus the [test] extra: what both install is pinned identically.
    assert {n: v for n, (v, _) in run.items()} == {n: test[n][0] for n in run if n in test}
    assert set(run) <= set(test)
