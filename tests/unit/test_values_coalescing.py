"""Values coalesce as Helm coalesces them: one function serves discovery and promotion."""

from __future__ import annotations

from bundler.model.relocation import coalesce_values


def test_maps_merge_and_a_null_override_removes_the_default() -> None:
    image = {"repository": "app", "tag": "1.0", "digest": "sha256:x"}
    defaults = {"image": image, "n": 1}
    overrides = {"image": {"tag": "2.0", "digest": None}, "extra": [1]}
    merged = coalesce_values(defaults, overrides)
    assert merged == {"image": {"repository": "app", "tag": "2.0"}, "n": 1, "extra": [1]}
    assert image["digest"] == "sha256:x"  # the inputs are left as they were


def test_no_overrides_leave_the_defaults_and_scalars_replace_maps() -> None:
    defaults = {"sub": {"enabled": True}}
    assert coalesce_values(defaults, None) == defaults
    assert coalesce_values(defaults, None) is not defaults
    assert coalesce_values(defaults, {"sub": "off"}) == {"sub": "off"}
    assert coalesce_values(None, {"a": {"b": 1}}) == {"a": {"b": 1}}
