"""An approval signs exactly the digest that was verified."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from bundler.adapters.crypto import generate_key
from bundler.errors import VerificationError
from bundler.model.digest import Digest
from bundler.services.sign import sign
from bundler.services.transports import Transports, parse_location

REF = "example.local/unit/app:1.0"


def _layout(tmp_path: Path, synth: ModuleType) -> Path:
    out = tmp_path / "layout"
    synth.write_image(out, REF, [synth.LayerSpec("unit-sign", 1024, level=0)])
    return out


def test_signing_a_moved_tag_signs_nothing(tmp_path: Path, synth: ModuleType) -> None:
    layout = _layout(tmp_path, synth)
    before = (layout / "index.json").read_bytes()
    with pytest.raises(VerificationError, match="not the verified"):
        sign(
            parse_location(f"oci:{layout}:{REF}"),
            generate_key(),
            Transports(use_blob_cache=False),
            expected=Digest.of(b"another bundle"),
        )
    assert (layout / "index.json").read_bytes() == before


def test_signing_the_expected_digest_adds_the_sig_tag(tmp_path: Path, synth: ModuleType) -> None:
    layout = _layout(tmp_path, synth)
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    result = sign(
        parse_location(f"oci:{layout}:{REF}"),
        generate_key(),
        Transports(use_blob_cache=False),
        expected=Digest.parse(entry["digest"]),
    )
    names = {
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads((layout / "index.json").read_text())["manifests"]
    }
    assert result.tags[0] in names
