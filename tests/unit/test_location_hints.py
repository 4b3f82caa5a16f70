"""Locations written the way other tools write them are understood, or answered with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.errors import ReferenceFormatError
from bundler.services.transports import parse_location


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        ("oci-archive:/media/usb/app.tar", "did you mean archive:/media/usb/app.tar?"),
        ("oci-layout:/srv/layout", "did you mean oci:/srv/layout?"),
        ("/media/usb/app.tar", "did you mean archive:/media/usb/app.tar?"),
        ("./layout", "did you mean oci:./layout?"),
        ("../Bundles/Demo.tar", "did you mean archive:../Bundles/Demo.tar?"),
    ],
)
def test_a_location_of_another_tool_gets_a_hint(typed: str, hint: str) -> None:
    with pytest.raises(ReferenceFormatError) as caught:
        parse_location(typed)
    assert str(caught.value).endswith(hint)
    assert "\n" not in str(caught.value)


def test_an_existing_directory_is_hinted_as_a_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "My Layout").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReferenceFormatError, match=r"did you mean oci:My Layout\?$"):
        parse_location("My Layout")


def test_helms_oci_prefix_names_a_registry_reference() -> None:
    location = parse_location("oci://registry.example:5000/charts/demo:1.0.0")
    assert location.kind == "registry"
    assert str(location.reference) == "registry.example:5000/charts/demo:1.0.0"


def test_a_malformed_reference_with_no_likely_meaning_gets_no_hint() -> None:
    with pytest.raises(ReferenceFormatError) as caught:
        parse_location("Bad Ref")
    assert "did you mean" not in str(caught.value)
