"""Names from archives, layouts and registries never reach the terminal as escape sequences.

A name such as ``v1<ESC>[1A<ESC>[2K<ESC>[32mverified`` would move the cursor up, erase the line and
print a green "verified" of its own; printed through :func:`bundler.model.text.printable` it shows
as ``v1\\x1b[1A...`` instead.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cli_support import run_in_process as _bundler

from bundler.cli import main as cli_main
from bundler.errors import ManifestError
from bundler.model.text import printable

FAKE_VERIFIED = "v1\x1b[1A\x1b[2K\x1b[32mverified"


@pytest.fixture(autouse=True)
def _hermetic_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _layout_named(root: Path, ref_name: str) -> None:
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
                "digest": put(b"{}"),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": put(b"x"),
                    "size": 1,
                }
            ],
        }
    ).encode()
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": ref_name},
    }
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


# -- the helper ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[32mverified\x1b[0m", "\\x1b[32mverified\\x1b[0m"),
        ("a\rb\nc\td", "a\\rb\\nc\\td"),
        ("\x07\x00\x7f", "\\x07\\x00\\x7f"),
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("\x1b]8;;https://evil.test\x07link", "\\x1b]8;;https://evil.test\\x07link"),  # OSC 8
        ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
        ("line\u2028two", "line\\u2028two"),
    ],
)
def test_terminal_controls_are_shown_escaped(raw: str, shown: str) -> None:
    assert printable(raw) == shown


@pytest.mark.parametrize("text", ["demo 1.0.0", "café", "日本語のチャート", "🚀 rocket", "a/b:c@d"])
def test_ordinary_unicode_is_kept(text: str) -> None:
    assert printable(text) == text


# -- through the CLI -------------------------------------------------------------------------


def test_inspect_of_a_layout_with_an_escape_in_a_name_prints_no_escape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _layout_named(tmp_path / "layout", FAKE_VERIFIED)
    code, out, err = _bundler(["inspect", f"oci:{tmp_path / 'layout'}"], capsys, monkeypatch)
    assert code == 0, err
    assert "\x1b" not in out + err
    assert "v1\\x1b[1A\\x1b[2K\\x1b[32mverified" in out


def test_error_line_with_an_escape_from_outside_prints_no_escape(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def hostile(**_: object) -> None:
        raise ManifestError(f"bundle {FAKE_VERIFIED} is not signed")

    monkeypatch.setattr(cli_main, "app", hostile)
    code, _out, err = _bundler([], capsys, monkeypatch)
    assert code != 0
    assert "\x1b" not in err
    assert err == "error: bundle v1\\x1b[1A\\x1b[2K\\x1b[32mverified is not signed\n"
