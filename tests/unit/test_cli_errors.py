"""The CLI's one error boundary: families become exit codes, errors are one line on stderr."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_in_process as _bundler

from bundler import __version__


@pytest.fixture(autouse=True)
def _hermetic_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's Docker config and caches out of reach."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _assert_one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def _layout_with_corrupt_layer(root: Path) -> None:
    layer, config = b"layer content", b"{}"

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}"

    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": put(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    manifest_digest = put(manifest)
    (root / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()).write_bytes(b"LAYER content")
    (root / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest_digest,
                        "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": "v1"},
                    }
                ],
            }
        )
    )


def test_malformed_reference_exits_2_with_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _bundler(
        ["copy", "--from", "Example.com/UPPER/Case:1", "--to", f"oci:{tmp_path / 'out'}:t"],
        capsys,
        monkeypatch,
    )
    assert code == 2
    assert out == ""
    assert "invalid reference" in _assert_one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_missing_oci_directory_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _bundler(
        ["copy", "--from", f"oci:{tmp_path / 'missing'}:v1", "--to", f"oci:{tmp_path / 'o'}:t"],
        capsys,
        monkeypatch,
    )
    assert code == 3
    assert out == ""
    assert "missing" in _assert_one_error_line(err)


def test_corrupt_blob_exits_6_and_writes_no_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _layout_with_corrupt_layer(tmp_path / "src")
    code, _, err = _bundler(
        [
            "copy",
            "--from",
            f"oci:{tmp_path / 'src'}:v1",
            "--to",
            f"oci:{tmp_path / 'dst'}:v1",
            "--quiet",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 6
    assert "content was altered" in _assert_one_error_line(err)
    assert not (tmp_path / "dst" / "index.json").exists()


def test_digest_as_copy_target_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _layout_with_corrupt_layer(tmp_path / "src")
    code, _, err = _bundler(
        [
            "copy",
            "--from",
            f"oci:{tmp_path / 'src'}:v1",
            "--to",
            "registry.test/app@sha256:" + "0" * 64,
        ],
        capsys,
        monkeypatch,
    )
    assert code == 2
    _assert_one_error_line(err)


def test_missing_required_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = _bundler(["copy", "--from", "oci:x:y"], capsys, monkeypatch)
    assert code == 2
    assert "--to" in err


def test_help_lists_the_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _bundler(["--help"], capsys, monkeypatch)
    assert code == 0
    for command in ("copy", "login", "logout", "version"):
        assert command in out


@pytest.mark.parametrize("argv", [["version"], ["--version"]])
def test_version_prints_the_version(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _bundler(argv, capsys, monkeypatch)
    assert (code, out, err) == (0, f"{__version__}\n", "")


def test_module_entry_point_maps_errors_to_exit_codes(tmp_path: Path) -> None:
    # The way a user runs it: a real process, exit status and stderr only.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bundler.cli.main",
            "copy",
            "--from",
            "not a reference",
            "--to",
            f"oci:{tmp_path / 'out'}:t",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ.copy(),
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    _assert_one_error_line(proc.stderr)


def test_a_ca_file_that_is_not_pem_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    code, out, err = _bundler(["tags", "127.0.0.1:1/x", "--ca-file", str(bad)], capsys, monkeypatch)
    assert code == 2
    assert out == ""
    assert err == (
        f"error: CA file {bad} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')\n"
    )
