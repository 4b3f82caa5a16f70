"""``bundler copy --max-volume-size``: an archive split into volumes for removable media, read
back from the volumes into a registry with identical digests, tampering refused before anything
is tagged, and the concatenation a standard archive for skopeo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from copy_support import Cli, Judge, leftovers, unique
from harness.registry import RegistryServer

REF = "example.local/demo/volumes:1.0.0"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def volumes_layout(synth: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image with about 3.5 MiB of stored (incompressible) layers."""
    layout = tmp_path_factory.mktemp("volumes-layout") / "layout"
    synth.write_image(
        layout,
        REF,
        [
            synth.LayerSpec("cli-vol-base", 2 * MiB + 4321, level=0),
            synth.LayerSpec("cli-vol-app", MiB + 99, level=0),
        ],
    )
    return layout


@pytest.fixture
def split(cli: Cli, volumes_layout: Path, tmp_path: Path) -> Path:
    out = tmp_path / "media" / "OUT.tar"
    out.parent.mkdir()
    res = cli.copy(f"oci:{volumes_layout}:{REF}", f"archive:{out}", "--max-volume-size", "1M")
    assert res.returncode == 0, res.describe()
    return out


def _parts(out: Path) -> list[Path]:
    doc = json.loads((out.parent / f"{out.name}.parts.json").read_bytes())
    return [out.parent / p["name"] for p in doc["parts"]]


def test_export_writes_several_parts_and_a_parts_list(split: Path) -> None:
    names = sorted(p.name for p in split.parent.iterdir())
    parts = _parts(split)
    assert len(parts) >= 4
    assert names == sorted([*(p.name for p in parts), "OUT.tar.parts.json"])
    assert all(p.stat().st_size == MiB for p in parts[:-1])
    assert 0 < parts[-1].stat().st_size <= MiB
    assert not split.exists()
    assert leftovers(split.parent) == []


def test_import_from_volumes_keeps_every_digest(
    cli: Cli, judge: Judge, split: Path, volumes_layout: Path, plain_registry: RegistryServer
) -> None:
    dest = f"{plain_registry.host}/{unique('volumes')}:1"
    res = cli.copy(f"archive:{split}", dest)
    assert res.returncode == 0, res.describe()
    expected = judge.raw(f"oci:{volumes_layout}:{REF}")
    assert judge.raw(f"docker://{dest}", plain_registry) == expected
    assert res.json["digest"] == judge.raw_digest(f"oci:{volumes_layout}:{REF}")
    # Naming the parts list itself works the same.
    dest2 = f"{plain_registry.host}/{unique('volumes-list')}:1"
    res = cli.copy(f"archive:{split}.parts.json", dest2)
    assert res.returncode == 0, res.describe()
    assert judge.raw(f"docker://{dest2}", plain_registry) == expected


def test_flipped_byte_in_a_middle_part_is_refused_and_nothing_is_tagged(
    cli: Cli, judge: Judge, split: Path, plain_registry: RegistryServer
) -> None:
    middle = _parts(split)[len(_parts(split)) // 2]
    data = bytearray(middle.read_bytes())
    data[12345] ^= 0x40
    middle.write_bytes(bytes(data))
    repo = unique("volumes-flipped")
    res = cli.copy(f"archive:{split}", f"{plain_registry.host}/{repo}:1")
    assert res.returncode == 6, res.describe()
    assert middle.name in res.error_line
    assert "Traceback" not in res.stderr
    assert judge.tags(plain_registry, repo) == []


def test_missing_part_is_not_found(
    cli: Cli, judge: Judge, split: Path, plain_registry: RegistryServer
) -> None:
    gone = _parts(split)[1]
    gone.unlink()
    repo = unique("volumes-missing")
    res = cli.copy(f"archive:{split}", f"{plain_registry.host}/{repo}:1")
    assert res.returncode == 3, res.describe()
    assert gone.name in res.error_line
    assert judge.tags(plain_registry, repo) == []


def test_concatenation_is_a_standard_archive(
    judge: Judge, split: Path, volumes_layout: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.tar"
    with open(whole, "wb") as out:
        for part in sorted(split.parent.glob("OUT.tar.0*")):
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out)
    assert judge.raw(f"oci-archive:{whole}:{REF}") == judge.raw(f"oci:{volumes_layout}:{REF}")
    judge.inspect(f"oci-archive:{whole}:{REF}")


def test_volume_size_on_a_non_archive_target_is_a_usage_error(
    cli: Cli, volumes_layout: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dir"
    res = cli.copy(f"oci:{volumes_layout}:{REF}", f"oci:{out}:x", "--max-volume-size", "1M")
    assert res.returncode == 2, res.describe()
    assert "--max-volume-size" in res.error_line
    assert not out.exists()


@pytest.mark.parametrize("size", ["1K", "lots", "0"])
def test_bad_volume_size_is_a_usage_error(
    cli: Cli, volumes_layout: Path, tmp_path: Path, size: str
) -> None:
    out = tmp_path / "OUT.tar"
    res = cli.copy(f"oci:{volumes_layout}:{REF}", f"archive:{out}", "--max-volume-size", size)
    assert res.returncode == 2, res.describe()
    assert list(tmp_path.glob("OUT.tar*")) == []
