"""``export`` checks the destination's free space first and refuses, writing nothing.

The filesystem's answer is replaced (``os.statvfs``): a full disk cannot be made without root.
The real ``statvfs`` path runs in every other export (tests/integration/test_transfer.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bundler.adapters import archive
from bundler.adapters.registry.options import RegistryOptions
from bundler.cli.main import run
from bundler.services.copy import plan_copy
from bundler.services.transports import Transports, parse_location

LAYER = os.urandom(256 * 1024)  # incompressible; the archive stores it as it is


@pytest.fixture(autouse=True)
def _hermetic_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _layout(root: Path) -> None:
    """An OCI layout holding one image, ref ``v1``, with a 256 KiB layer."""
    (root / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs" / "sha256" / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    config = put(b"{}")
    layer = put(LAYER)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
        }
    ).encode()
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **put(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
    }
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


class _Fs:
    def __init__(self, free: int) -> None:
        self.f_frsize = 4096
        self.f_bavail = free // 4096


def _export(
    tmp_path: Path,
    free: int | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str, str]:
    _layout(tmp_path / "src")
    (tmp_path / "media").mkdir()
    if free is not None:
        asked: list[str] = []

        def statvfs(path: str | os.PathLike[str]) -> _Fs:
            asked.append(os.fspath(path))
            return _Fs(free)

        monkeypatch.setattr(os, "statvfs", statvfs)
    argv = ["export", f"oci:{tmp_path / 'src'}:v1", "--to", f"archive:{tmp_path / 'media/a.tar'}"]
    monkeypatch.setattr(sys, "argv", ["bundler", *argv])
    code = 0
    try:
        run()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    if free is not None:
        assert asked == [str(tmp_path / "media")]  # the archive's own directory
    out, err = capsys.readouterr()
    return code, out, err


def test_too_little_room_is_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _export(tmp_path, 100 * 1024, capsys, monkeypatch)
    assert code == 5, err
    assert err.startswith(
        f"error: not enough free space in {tmp_path / 'media'}: the archive a.tar needs up to "
    )
    assert "KiB, 100.0 KiB are free; free some space" in err
    assert len(err.splitlines()) == 1
    assert out == ""
    assert list((tmp_path / "media").iterdir()) == []  # no archive, no partial file


def test_enough_room_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = _export(tmp_path, 1024 * 1024 * 1024, capsys, monkeypatch)
    assert code == 0, err
    assert (tmp_path / "media" / "a.tar").is_file()


def test_the_room_asked_for_is_at_least_the_archive_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = _export(tmp_path, None, capsys, monkeypatch)  # the real filesystem
    assert code == 0, err
    with Transports(RegistryOptions()) as transports:
        source = transports.open_source(parse_location(f"oci:{tmp_path / 'src'}:v1"))
        try:
            bound = archive.archive_size_bound(plan_copy(source))
        finally:
            source.close()
    written = (tmp_path / "media" / "a.tar").stat().st_size
    assert len(LAYER) < written <= bound
