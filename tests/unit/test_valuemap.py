"""Differential rendering and composition solving, without Helm.

A "chart" here is a Python function from values to rendered manifests, composing images the
ways real charts do (registry + repository + tag, a tag defaulting to the appVersion with a
``v`` prefix, a digest added with ``@`` when set, a global registry that wins over a local one,
a template that refuses non-version tags). Helm-backed proofs are in the integration tests.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from bundler.errors import ChartError
from bundler.model.digest import Digest
from bundler.model.relocation import relocate
from bundler.services.chartrewrite import Unsolvable, prove, rewrite_literal, solve
from bundler.services.rendered import Scan, scan
from bundler.services.valuemap import candidates, compose, controls

DIGEST = "sha256:" + "cd" * 32
APP_VERSION = "1.4.2"


def deployment(name: str, image: str, args: list[str] | None = None) -> str:
    extra = "".join(f"\n            - {a!r}" for a in args or [])
    return (
        f"kind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  template:\n    spec:\n"
        f"      containers:\n        - name: {name}\n          image: {image!r}\n"
        + (f"          args:{extra}\n" if args else "")
    )


def chart(values: dict[str, Any]) -> str:
    """Three images, composed as charts compose them."""
    glob = values.get("global", {})
    web = values["web"]["image"]
    registry = glob.get("imageRegistry") or web.get("registry")
    tag = web.get("tag") or f"v{APP_VERSION}"
    if not re.match(r"v?\d", str(tag)):
        raise ChartError("helm template of chart failed: tag must be a version")
    web_ref = f"{registry}/{web['repository']}:{tag}"
    if web.get("digest"):
        web_ref += f"@{web['digest']}"
    api = values["api"]["image"]
    solver = values["solver"]
    solver_ref = f"{solver['registry']}/{solver['namespace']}/{solver['name']}:v{APP_VERSION}"
    docs = [
        deployment("web", web_ref),
        deployment("api", api, [f"--solver-image={solver_ref}"]),
        deployment("debug", "busybox:1.36"),
    ]
    return "---\n".join(docs)


VALUES: dict[str, Any] = {
    "global": {"imageRegistry": ""},
    "web": {"image": {"registry": "quay.io", "repository": "acme/web", "tag": ""}},
    "api": {"image": "ghcr.io/acme/api:2.0"},
    "solver": {"registry": "quay.io", "namespace": "acme", "name": "solver"},
}


def merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base.get(key), value)
        return out
    return over


def render(doc: dict[str, Any]) -> Scan:
    return scan(chart(merge(VALUES, doc)))


def mapped() -> tuple[Scan, dict[str, str | None]]:
    base = render({})
    found = controls(base, VALUES, render, {(): APP_VERSION})
    weight: Counter[str] = Counter()
    for place_controls in found.values():
        weight.update({c.path for c in place_controls})
    return base, {
        f"{i.reference} {i.kind}": (
            c.text if (c := compose(i, found[i.place], weight)).parts else None
        )
        for i in base.images
    }


def test_candidates_cover_image_maps_absent_keys_registries_and_reference_strings() -> None:
    found = {c.dotted: (c.role, c.empty) for c in candidates(VALUES, {(): APP_VERSION})}
    assert found["global.imageRegistry"] == ("registry", True)
    assert found["web.image.registry"] == ("registry", False)
    assert found["web.image.tag"] == ("tag", True)
    assert found["web.image.digest"] == ("digest", True)  # absent: probed all the same
    assert found["api.image"] == ("reference", False)
    assert "solver.name" not in found  # not an image map, not an image-like key


def test_values_composing_each_image_are_found_by_rendering() -> None:
    _, compositions = mapped()
    assert compositions == {
        # the global registry wins over the local one: the chart renders it that way
        "quay.io/acme/web:v1.4.2 container": (
            "{global.imageRegistry}/{web.image.repository}:{web.image.tag}{@web.image.digest}"
        ),
        "ghcr.io/acme/api:2.0 container": "{api.image}",
        # registry is a value, the rest is fixed in the template
        "quay.io/acme/solver:v1.4.2 embedded": "{solver.registry}/acme/solver:v1.4.2",
        "docker.io/library/busybox:1.36 container": None,  # a literal
    }


def test_a_marker_that_breaks_the_render_is_dropped_not_fatal() -> None:
    def strict(doc: dict[str, Any]) -> Scan:
        if "bm" in str(doc.get("api", "")):
            raise ChartError("helm template of chart failed: api image is checked")
        return render(doc)

    base = render({})
    found = controls(base, VALUES, strict, {(): APP_VERSION})
    api = next(i for i in base.images if i.reference.startswith("ghcr.io"))
    assert found[api.place] == []
    web = next(i for i in base.images if "web" in i.reference)
    assert {c.path for c in found[web.place]} >= {"web.image.repository", "web.image.tag"}


RELOCATED = relocate("quay.io/acme/web:v1.4.2", Digest.parse(DIGEST), "int:5000", "apps", "nested")


@pytest.mark.parametrize(
    ("composition", "written", "wanted"),
    [
        (
            "{g.registry}/{w.repository}:{w.tag}{@w.digest}",
            "quay.io/acme/web:v1.4.2",
            {"g.registry": "int:5000", "w.repository": "apps/acme/web", "w.digest": DIGEST},
        ),
        (  # no digest value: the digest follows the tag
            "{w.registry}/{w.repository}:v{w.tag}",
            "quay.io/acme/web:v1.4.2",
            {
                "w.registry": "int:5000",
                "w.repository": "apps/acme/web",
                "w.tag": f"1.4.2@{DIGEST}",
            },
        ),
        (  # a repository value that carries the registry host
            "{w.repository}:{w.tag}",
            "quay.io/acme/web:v1.4.2",
            {"w.repository": "int:5000/apps/acme/web", "w.tag": f"v1.4.2@{DIGEST}"},
        ),
        (  # registry + namespace + name: the namespace takes the first path segment
            "{r}/{ns}/{name}:{tag}",
            "quay.io/acme/web:v1.4.2",
            {"r": "int:5000", "ns": "apps", "name": "acme/web", "tag": f"v1.4.2@{DIGEST}"},
        ),
        (  # one string for the whole reference
            "{image}",
            "quay.io/acme/web:v1.4.2",
            {"image": f"int:5000/apps/acme/web:v1.4.2@{DIGEST}"},
        ),
    ],
)
def test_solve_gives_the_relocated_reference_in_the_charts_form(
    composition: str, written: str, wanted: dict[str, str]
) -> None:
    assert solve(composition, written, RELOCATED) == wanted


@pytest.mark.parametrize(
    ("composition", "style", "reason"),
    [
        ("quay.io/acme/web:{tag}", "nested", "no value controls the repository"),
        ("{registry}/acme/web:v1.4.2", "nested", "nothing can pin it by digest"),
        ("{registry}/acme/{repo}:{tag}", "flat", "fixed text"),
    ],
)
def test_solve_refuses_what_values_cannot_express(
    composition: str, style: str, reason: str
) -> None:
    written = "quay.io/acme/web:v1.4.2"
    relocation = relocate(written, Digest.parse(DIGEST), "int:5000", "apps", style)
    with pytest.raises(Unsolvable, match=reason):
        solve(composition, written, relocation)


def test_literal_is_rewritten_only_in_templates_and_only_whole() -> None:
    files = {
        "templates/debug.yaml": b"image: busybox:1.36\n# busybox:1.36.1 stays\n",
        "templates/_helpers.tpl": b'{{- define "x" -}}busybox:1.36{{- end -}}\n',
        "values.yaml": b"other: thing\n",
    }
    changed = rewrite_literal(files, "busybox:1.36", "int:5000/apps/busybox:1.36@" + DIGEST)
    assert changed == ["templates/_helpers.tpl", "templates/debug.yaml"]
    assert files["templates/debug.yaml"].startswith(b"image: int:5000/apps/busybox:1.36@sha256:")
    assert b"busybox:1.36.1 stays" in files["templates/debug.yaml"]
    in_values = {"templates/a.yaml": b"image: busybox:1.36\n", "values.yaml": b"x: busybox:1.36\n"}
    assert rewrite_literal(in_values, "busybox:1.36", "new") is None


def test_proof_names_every_image_that_is_not_internal_pinned_and_held() -> None:
    held = relocate("quay.io/acme/web:v1", Digest.parse(DIGEST), "int:5000", "apps", "nested")
    other = "sha256:" + "ef" * 32
    text = "---\n".join(
        [
            deployment("ok", held.pinned),
            deployment("external", "quay.io/acme/web:v1"),
            deployment("tagged", "int:5000/apps/acme/web:v1"),
            deployment("unknown", f"int:5000/apps/acme/web:v1@{other}"),
            deployment("allowed", "docker.io/library/redis:7"),
        ]
    )
    problems = prove(text, [held], "int:5000", "apps", ["docker.io/library/redis:7"])
    assert len(problems) == 3
    assert any("Deployment/external" in p and "not under int:5000/apps/" in p for p in problems)
    assert any("Deployment/tagged" in p and "not pinned by digest" in p for p in problems)
    assert any("Deployment/unknown" in p and "does not hold" in p for p in problems)


def test_a_registry_the_chart_prefixes_is_solved_with_the_value_another_image_set() -> None:
    # prometheus-pushgateway: "{{ with global.imageRegistry }}{{ . }}/{{ end }}{{ repository }}"
    composition = "{global.imageRegistry/}{pg.image.repository}:{pg.image.tag}"
    written = "quay.io/prometheus/pushgateway:v1.11.3"
    relocation = relocate(written, Digest.parse(DIGEST), "int:5000", "apps", "nested")
    alone = solve(composition, written, relocation)
    assert alone["pg.image.repository"] == "int:5000/apps/prometheus/pushgateway"
    shared = solve(composition, written, relocation, {"global.imageRegistry": "int:5000"})
    assert shared == {
        "pg.image.repository": "apps/prometheus/pushgateway",
        "pg.image.tag": f"v1.11.3@{DIGEST}",
    }


def test_a_prefix_the_chart_adds_is_found_as_such() -> None:
    def prefixing(doc: dict[str, Any]) -> Scan:
        values = merge({"global": {"imageRegistry": ""}, "pg": {"repository": "quay.io/p/pg"}}, doc)
        registry = values["global"]["imageRegistry"]
        image = (f"{registry}/" if registry else "") + values["pg"]["repository"] + ":v1"
        return scan(deployment("pg", image))

    base = prefixing({})
    values = {"global": {"imageRegistry": ""}, "pg": {"repository": "quay.io/p/pg"}}
    found = controls(base, values, prefixing)
    [image] = base.images
    composition = compose(image, found[image.place], Counter())
    assert composition.text == "{global.imageRegistry/}{pg.repository}:v1"
    assert [p.role for p in composition.parts] == ["registry", "repository"]


def test_proof_counts_a_container_image_that_is_not_even_a_reference() -> None:
    text = deployment("doubled", "int:5000/int:5000/apps/web:v1@" + DIGEST)
    [problem] = prove(text, [], "int:5000", "apps")
    assert "Deployment/doubled" in problem and "not a valid image reference" in problem
