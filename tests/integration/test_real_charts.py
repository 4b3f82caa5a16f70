"""The charts people ship: pack what Helm renders, promote it, and prove it with Helm.

Six real charts from ``../shared/data/charts`` (read-only; skipped with a reason where absent),
each with its default values and with a realistic override (a registry mirror, an optional
component enabled). For each: ``bundler images`` names what the render runs; synthetic stand-in
images are made under exactly those references; ``bundler pack`` bundles exactly the images an
independent reading of ``helm template`` finds; ``bundler promote`` into a real registry
succeeds; and ``helm pull`` + ``helm template`` of the promoted chart run only images under the
internal prefix, pinned by digest, and present in the internal registry.

Charts that pin upstream digests (ingress-nginx) get stand-ins pinned by setting the digest
values bundler reports to the stand-ins' digests, as a vendor pinning its own builds would.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
import yaml
from copy_support import BUNDLER, Cli, Result
from harness.registry import RegistryServer, start_registry
from pack_support import Helm, pack_cli, rendered_images, stand_ins
from transfer_support import ok

PASS_VAR = "BUNDLER_TEST_PASSPHRASE"
PASSPHRASE = "real-charts"
MIRROR = "mirror.example.com"

# chart folder -> scenario name -> flags (values given as --set, or as a values file written to
# the working directory and passed by a relative path).
SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    "ingress-nginx": {
        "default": {},
        "mirror+default-backend": {
            "values": {"global": {"image": {"registry": MIRROR}}},
            "set": ["defaultBackend.enabled=true"],
        },
    },
    "cert-manager": {
        "default": {},
        "mirror": {"set": [f"imageRegistry={MIRROR}", "imageNamespace=platform/jetstack"]},
    },
    "kube-prometheus-stack": {"default": {}},
    "wordpress": {
        "default": {},
        "mirror+metrics": {
            "values": {
                "global": {"imageRegistry": MIRROR, "security": {"allowInsecureImages": True}},
                "metrics": {"enabled": True},
            },
        },
    },
    "traefik": {
        "default": {},
        "mirror": {"set": [f"image.registry={MIRROR}", "image.repository=proxy/traefik"]},
    },
    "argo-cd": {
        "default": {},
        "redis-ha": {"set": ["redis-ha.enabled=true"]},
    },
}
CASES = [(chart, name) for chart, scenarios in SCENARIOS.items() for name in scenarios]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def internal(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    server = start_registry("plain", tmp_path_factory.mktemp("internal"), binary=registry_binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rcli(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = pack_cli(tmp_path_factory.mktemp("real-charts") / "user", helm)
    cli.env[PASS_VAR] = PASSPHRASE
    return cli


@pytest.fixture(scope="module")
def keys(rcli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("real-chart-keys")
    for name in ("vendor", "promoter"):
        ok(rcli("keys", "generate", directory / name, "--passphrase-env", PASS_VAR))
    return directory


@dataclass
class Case:
    chart: Path
    name: str
    version: str
    flags: list[str]
    workdir: Path


def _flags(spec: dict[str, Any], workdir: Path) -> list[str]:
    flags: list[str] = []
    if "values" in spec:
        (workdir / "override.yaml").write_text(yaml.safe_dump(spec["values"]))
        flags += ["-f", "override.yaml"]  # relative: resolved against the working directory
    for item in spec.get("set", []):
        flags += ["--set", item]
    return flags


def _run_in(cli: Cli, workdir: Path, *args: str | Path) -> Result:
    """The CLI run from ``workdir`` (so relative values files are relative to it)."""
    argv = [*BUNDLER, *(str(a) for a in args)]
    proc = subprocess.run(
        argv,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, argv)


# ------------------------------------------------------------------------------ the test
@pytest.mark.parametrize(("chart_name", "scenario"), CASES, ids=[f"{c}-{s}" for c, s in CASES])
def test_real_chart_packs_what_helm_renders_and_promotes_only_internal_images(
    chart_name: str,
    scenario: str,
    shared_data: Path,
    helm: str,
    synth: ModuleType,
    rcli: Cli,
    keys: Path,
    internal: RegistryServer,
    tmp_path: Path,
) -> None:
    chart = shared_data / "charts" / chart_name
    if not chart.is_dir():
        pytest.skip(f"{chart} not present")
    judge = Helm(helm, tmp_path / "judge")
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    missing = [
        d["name"]
        for d in meta.get("dependencies") or []
        if not d.get("repository", "").startswith("file://")
        and not any((chart / "charts").glob(f"{d['name']}*"))
    ]
    if missing:
        pytest.skip(f"{chart_name}: its vendored dependencies {missing} are not in {chart}/charts")
    flags = _flags(SCENARIOS[chart_name][scenario], tmp_path)

    # What runs, as bundler lists it, and stand-ins under exactly those references.
    listed = _run_in(rcli, tmp_path, "images", chart, *flags, "-o", "json")
    assert listed.returncode == 0, listed.describe()
    images = json.loads(listed.stdout)["images"]
    assert images and all(i["rendered"] for i in images), images
    flags += stand_ins(synth, tmp_path / "layout", images)

    # An independent reading of Helm's render with the same values is what the bundle holds.
    expected = rendered_images(judge("template", "bundle", chart, *flags, cwd=tmp_path))
    packed = _run_in(
        rcli,
        tmp_path,
        "pack",
        "--chart",
        chart,
        "--to",
        f"oci:{tmp_path / 'bundle'}",
        "--source",
        f"oci:{tmp_path / 'layout'}",
        "--no-upstream",
        *flags,
        "-o",
        "json",
    )
    assert packed.returncode == 0, packed.describe()
    result = json.loads(packed.stdout)
    assert {i["reference"] for i in result["images"]} == expected
    for image in result["images"]:
        assert image["uses"], image
        assert "template" in image["foundBy"]

    # Signed by the vendor, promoted into the internal registry.
    ok(
        rcli(
            "sign",
            f"oci:{tmp_path / 'bundle'}",
            "--key",
            keys / "vendor.key",
            "--passphrase-env",
            PASS_VAR,
        )
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - name: vendor\n    role: vendor\n    path: {keys / 'vendor.pub'}\n"
        f"bundles:\n  - name: {result['name']}\n    require:\n      - role: vendor\n"
    )
    prefix = f"apps-{uuid.uuid4().hex[:8]}"
    promoted = rcli(
        "promote",
        f"oci:{tmp_path / 'bundle'}",
        "--to",
        internal.ref(prefix),
        "--policy",
        policy,
        "--key",
        keys / "promoter.key",
        "--passphrase-env",
        PASS_VAR,
        "--out",
        tmp_path / "out",
        "-o",
        "json",
        timeout=600,
    )
    assert promoted.returncode == 0, promoted.describe()
    record = json.loads(promoted.stdout)
    assert {r["source"] for r in record["relocations"]} == expected
    assert all(r["how"] for r in record["relocations"]), record["relocations"]

    # Helm, as Argo CD runs it, on the chart pulled from the internal registry.
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    judge(
        "pull",
        f"oci://{internal.ref(prefix)}/{meta['name']}",
        "--version",
        str(meta["version"]),
        "--plain-http",
        "-d",
        pulled,
    )
    [archive] = pulled.glob("*.tgz")
    runs = rendered_images(judge("template", "rel", archive))
    assert runs, "the promoted chart runs no image"
    base = f"{internal.ref(prefix)}/"
    for ref in runs:
        assert ref.startswith(base), f"{ref} is not under {base}"
        name, at, digest = ref.partition("@")
        assert at, f"{ref} is not pinned by digest"
        repo = name[len(internal.host) + 1 :].rsplit(":", 1)[0]
        head = requests.head(
            f"{internal.url}/v2/{repo}/manifests/{digest}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            timeout=30,
        )
        assert head.status_code == 200, f"{ref}: not in the internal registry ({head.status_code})"
    assert len(runs) == len(expected)
