"""``bundler promote`` end to end, against real registries and a real Helm v4.

A vendor registry and an internal registry are started for this module. The example bundle is
packed into the vendor registry, signed with the vendor key, exported to an archive, imported
into the internal registry's staging repository, verified and approved there, then promoted
under a policy that requires the vendor AND an approval. The outcome is judged by tools other
than bundler: ``helm pull`` / ``helm template``, ``skopeo inspect --raw``, raw registry HTTP and
the registry's own storage directory (for "nothing was written").

Refusals promote into a prefix of their own and compare the whole storage (every blob, every
repository link, every tag) before and after, so a refusal that writes anything anywhere fails.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import tarfile
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import requests
import yaml
from copy_support import API_REF, WEB_REF, WORKER_REF, Cli, Judge, Result, sha256_digest
from harness.certs import generate_server_certs
from harness.registry import RegistryServer, start_registry
from pack_support import (
    DEMO_CHART,
    EXAMPLE_REFS,
    HELM_CHART,
    MIGRATE_REF,
    Helm,
    archive_blob,
    archive_json,
    chart_entry,
    image_entries,
    layout_source,
    pack_cli,
    pack_ok,
)
from transfer_support import (
    PASS_VAR,
    PASSPHRASE,
    Keys,
    extract,
    flip_member_byte,
    ok,
    storage_blobs,
)

KiB = 1024
PIN = re.compile(r"^(?P<repo>[^@]+?)(?::(?P<tag>[^:@/]+))?@(?P<digest>sha256:[0-9a-f]{64})$")
IMAGE_LINE = re.compile(r"^\s*(?:-\s+)?image:\s*(?P<value>.+?)\s*$")
VENDOR_AND_APPROVAL = (
    "  - name: demo\n    versions: '>=1.0.0 <2.0.0'\n    require:\n      - role: vendor\n"
    "      - role: approval\n"
)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pcli(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = pack_cli(tmp_path_factory.mktemp("promote") / "user", helm)
    cli.env[PASS_VAR] = PASSPHRASE
    return cli


@pytest.fixture(scope="module")
def keys(pcli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Key pairs made with ``bundler keys generate``: vendor, approver, promoter, stranger."""
    directory = tmp_path_factory.mktemp("promote-keys")
    for name in ("vendor", "approver", "promoter", "stranger"):
        ok(pcli("keys", "generate", directory / name, "--passphrase-env", PASS_VAR))
    return Keys(directory)


@pytest.fixture(scope="module")
def policy(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The internal policy: the vendor AND one approval, for any 1.x version of demo."""
    path = tmp_path_factory.mktemp("promote-policy") / "trust-policy.yaml"
    path.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - name: vendor\n    role: vendor\n    path: {keys.public('vendor')}\n"
        f"  - name: approver\n    role: approval\n    path: {keys.public('approver')}\n"
        f"bundles:\n{VENDOR_AND_APPROVAL}"
    )
    return path


def _registry(binary: str, factory: pytest.TempPathFactory, name: str) -> Iterator[RegistryServer]:
    server = start_registry("plain", factory.mktemp(name), binary=binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vendor_registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    yield from _registry(registry_binary, tmp_path_factory, "vendor-registry")


@pytest.fixture(scope="module")
def internal(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """The internal registry: staging repositories and the promoted ones, this module only."""
    yield from _registry(registry_binary, tmp_path_factory, "internal-registry")


@dataclass(frozen=True)
class World:
    digest: str  # the vendor bundle digest
    archive: Path  # the exported archive, vendor-signed only
    staging: str  # INTERNAL/staging/demo:1.0.0, vendor-signed and approved
    approved_archive: Path  # a copy of the archive, approved in place


@pytest.fixture(scope="module")
def world(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    example_layout: Path,
    vendor_registry: RegistryServer,
    internal: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    """vendor registry -> pack -> sign -> export -> import -> verify -> approve."""
    home = tmp_path_factory.mktemp("promote-world")
    vendor_ref = vendor_registry.ref("vendor/demo:1.0.0")
    digest = pack_ok(
        pcli, "--chart", DEMO_CHART, *layout_source(example_layout), "--to", vendor_ref
    )["digest"]
    sign(pcli, vendor_ref, keys.private("vendor"))
    archive = home / "demo-1.0.0.tar"
    assert (
        ok(pcli("export", vendor_ref, "--to", f"archive:{archive}", "-o", "json")).json["digest"]
        == digest
    )
    staging = internal.ref("staging/demo:1.0.0")
    assert (
        ok(
            pcli(
                "import",
                f"archive:{archive}",
                "--to",
                staging,
                "--key",
                keys.public("vendor"),
                "-o",
                "json",
            )
        ).json["digest"]
        == digest
    )
    assert ok(pcli("verify", staging, "--key", keys.public("vendor"))).stdout.startswith(digest)
    approve(pcli, staging, keys, policy)
    out = ok(pcli("verify", staging, "--policy", policy)).stdout
    assert "vendor (vendor)" in out and "approver (approval)" in out
    approved_archive = home / "approved.tar"
    shutil.copyfile(archive, approved_archive)
    approve(pcli, f"archive:{approved_archive}", keys, policy)
    return World(digest, archive, staging, approved_archive)


@dataclass(frozen=True)
class Promoted:
    doc: dict[str, Any]  # promote -o json
    out: Path  # --out DIR
    prefix: str
    chart_digest: str


@pytest.fixture(scope="module")
def promoted(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    internal: RegistryServer,
    judge: Judge,
    tmp_path_factory: pytest.TempPathFactory,
) -> Promoted:
    """The approved staging bundle promoted into INTERNAL/platform (Argo CD files in out)."""
    out = tmp_path_factory.mktemp("promoted") / "deploy"
    res = promote(
        pcli,
        world.staging,
        internal.ref("platform"),
        policy,
        keys,
        "--out",
        out,
        "--app-namespace",
        "demo-prod",
        "-o",
        "json",
    )
    assert res.returncode == 0, res.describe()
    doc = res.json
    chart_digest = judge.manifest_digest(internal, "platform/demo", "1.0.0")
    assert chart_digest is not None
    return Promoted(doc, out, "platform", chart_digest)


@pytest.fixture(scope="module")
def unsigned_archive(
    pcli: Cli, example_layout: Path, world: World, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The same bundle packed straight into an archive and never signed."""
    path = tmp_path_factory.mktemp("promote-unsigned") / "unsigned.tar"
    digest = pack_ok(
        pcli, "--chart", DEMO_CHART, *layout_source(example_layout), "--to", f"archive:{path}"
    )["digest"]
    assert digest == world.digest  # packing is reproducible: only the signatures differ
    return path


@pytest.fixture(scope="module")
def changed_archive(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    example_layout: Path,
    synth: ModuleType,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """demo 1.0.0 again, same chart, but the migrate image (same tag) has other content;
    vendor-signed and approved."""
    home = tmp_path_factory.mktemp("promote-changed")
    layout = home / "layout"
    shutil.copytree(example_layout, layout)
    changed_migrate(synth, layout)
    archive = home / "changed.tar"
    digest = pack_ok(
        pcli, "--chart", DEMO_CHART, *layout_source(layout), "--to", f"archive:{archive}"
    )["digest"]
    assert digest != world.digest
    sign(pcli, f"archive:{archive}", keys.private("vendor"))
    approve(pcli, f"archive:{archive}", keys, policy)
    return archive


# ------------------------------------------------------------------------------- helpers
def sign(cli: Cli, location: str, key: Path) -> None:
    ok(cli("sign", location, "--key", key, "--passphrase-env", PASS_VAR))


def approve(cli: Cli, location: str, keys: Keys, policy: Path) -> None:
    res = ok(
        cli(
            "approve",
            location,
            "--key",
            keys.private("approver"),
            "--passphrase-env",
            PASS_VAR,
            "--policy",
            policy,
        )
    )
    assert "approved by approver (approval)" in res.stdout


def promote(
    cli: Cli, source: str, to: str, policy: Path, keys: Keys | None, *flags: str | Path
) -> Result:
    signer: list[str | Path] = (
        ["--key", keys.private("promoter"), "--passphrase-env", PASS_VAR] if keys else []
    )
    return cli("promote", source, "--to", to, "--policy", policy, *signer, *flags)


def prefix_of(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def refused(res: Result, code: int, *named: str) -> str:
    assert res.returncode == code, res.describe()
    line = res.error_line
    assert line.startswith("error: "), res.describe()
    for name in named:
        assert name in line, f"{name!r} not named in: {line}"
    assert res.stdout == "", res.describe()
    return line


def storage_state(reg: RegistryServer) -> tuple[set[str], dict[str, bytes]]:
    """Every committed blob, and every file under ``repositories/`` (links, tags, uploads)."""
    root = reg.storage_dir / "docker" / "registry" / "v2" / "repositories"
    files = (
        {}
        if not root.is_dir()
        else {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    )
    return storage_blobs(reg), files


def catalog(reg: RegistryServer) -> list[str]:
    resp = requests.get(f"{reg.url}/v2/_catalog?n=1000", timeout=30)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["repositories"])


def repo_tags(judge: Judge, reg: RegistryServer, prefix: str) -> dict[str, list[str]]:
    """tags/list of every repository under ``prefix`` (the chart's and the images')."""
    return {
        repo: sorted(judge.tags(reg, repo))
        for repo in catalog(reg)
        if repo == prefix or repo.startswith(prefix + "/")
    }


class Unchanged:
    """``with Unchanged(judge, reg, "platform", "other"):`` nothing at all is written."""

    def __init__(self, judge: Judge, reg: RegistryServer, *prefixes: str) -> None:
        self.judge, self.reg, self.prefixes = judge, reg, prefixes

    def snapshot(self) -> Any:
        tags = {p: repo_tags(self.judge, self.reg, p) for p in self.prefixes}
        return storage_state(self.reg), tags, catalog(self.reg)

    def __enter__(self) -> Unchanged:
        self.before = self.snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            (blobs, files), tags, repos = self.snapshot()
            (blobs0, files0), tags0, repos0 = self.before
            assert blobs == blobs0, f"new blobs: {sorted(blobs - blobs0)}"
            assert sorted(files) == sorted(files0), (
                f"storage changed: +{sorted(set(files) - set(files0))}"
                f" -{sorted(set(files0) - set(files))}"
            )
            assert files == files0, "a link or tag in the storage changed"
            assert tags == tags0
            assert repos == repos0


def image_lines(rendered: str) -> list[str]:
    """The value of every ``image:`` line of ``helm template`` output, quotes removed."""
    values = []
    for line in rendered.splitlines():
        match = IMAGE_LINE.match(line)
        if match:
            values.append(match.group("value").strip("\"'"))
    return values


def images_by_workload(rendered: str) -> dict[tuple[str, str], list[str]]:
    """{(kind, name): [container images]} of every workload in ``helm template`` output."""
    found: dict[tuple[str, str], list[str]] = {}
    for doc in yaml.safe_load_all(rendered):
        if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "CronJob"):
            continue
        spec = doc["spec"]
        pod = (
            spec["jobTemplate"]["spec"]["template"]["spec"]
            if doc["kind"] == "CronJob"
            else spec["template"]["spec"]
        )
        found[(doc["kind"], doc["metadata"]["name"])] = [
            c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]
        ]
    return found


def pull_and_template(
    helm_bin: str, home: Path, reg: RegistryServer, prefix: str
) -> tuple[Path, str]:
    helm = Helm(helm_bin, home / "helm")
    pulled = home / "pulled"
    pulled.mkdir(parents=True)
    helm(
        "pull", f"oci://{reg.ref(prefix)}/demo", "--version", "1.0.0", "--plain-http", "-d", pulled
    )
    chart = pulled / "demo-1.0.0.tgz"
    assert chart.is_file(), sorted(p.name for p in pulled.iterdir())
    return chart, helm("template", "rel", chart)


def registry_blob(reg: RegistryServer, repo: str, digest: str) -> bytes:
    resp = requests.get(f"{reg.url}/v2/{repo}/blobs/{digest}", timeout=30)
    assert resp.status_code == 200, (repo, digest, resp.status_code)
    assert sha256_digest(resp.content) == digest
    return resp.content


def assert_resolves(judge: Judge, reg: RegistryServer, pinned: str) -> bytes:
    """The pinned reference resolves: by digest and by its tag, to the pinned bytes."""
    match = PIN.match(pinned)
    assert match, pinned
    repo, tag, digest = match.group("repo"), match.group("tag"), match.group("digest")
    assert repo.startswith(reg.host + "/"), pinned
    raw = judge.raw(f"docker://{repo}@{digest}", reg)
    assert sha256_digest(raw) == digest, pinned
    if tag:
        assert judge.raw_digest(f"docker://{repo}:{tag}", reg) == digest, pinned
    return raw


def bundle_index(archive: Path, digest: str) -> dict[str, Any]:
    return archive_json(archive, digest)


def changed_migrate(synth: ModuleType, layout: Path) -> str:
    """Rewrite the migrate image of ``layout`` with other content; its new digest."""
    spec = synth.LayerSpec(
        "demo-migrate-changed",
        16 * KiB,
        "migrations/data.bin",
        files=(("migrations/run.sh", "#!/bin/sh\necho changed\n"),),
    )
    desc = synth.write_image(
        layout, MIGRATE_REF, [spec], ("linux", "amd64"), entrypoint=["/migrations/run.sh"]
    )
    return str(desc["digest"])


def argocd_schema(shared_data: Path) -> dict[str, Any]:
    crd = yaml.safe_load((shared_data / "argocd" / "application-crd.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return dict(strip(copy.deepcopy(schema)))


# ------------------------------------------------------------------ 1. end to end, via Helm
def test_promoted_chart_runs_only_internal_digest_pinned_images(
    promoted: Promoted,
    world: World,
    internal: RegistryServer,
    judge: Judge,
    helm: str,
    tmp_path: Path,
) -> None:
    doc = promoted.doc
    assert doc["mode"] == "relocate" and doc["dryRun"] is False
    assert doc["alreadyPromoted"] is False and doc["recordDigest"].startswith("sha256:")
    assert doc["bundle"]["digest"] == world.digest
    assert doc["chart"] == {
        "reference": internal.ref("platform/demo:1.0.0"),
        "digest": promoted.chart_digest,
    }
    assert sorted(r["source"] for r in doc["relocations"]) == sorted(EXAMPLE_REFS)
    # Standard Helm OCI chart: repository basename = chart name, tag = chart version.
    assert "1.0.0" in judge.tags(internal, "platform/demo")
    chart, rendered = pull_and_template(helm, tmp_path, internal, "platform")
    with tarfile.open(chart) as tar:
        member = tar.extractfile("demo/Chart.yaml")
        assert member is not None
        meta = yaml.safe_load(member.read())
    assert (meta["name"], meta["version"]) == ("demo", "1.0.0")

    lines = image_lines(rendered)
    assert len(lines) == 5, rendered  # web, api, migrate, worker (Deployment and CronJob)
    for value in lines:
        assert value.startswith(f"{internal.host}/platform/"), value
        assert "@sha256:" in value, value
        assert "example.local" not in value, value
    targets = {r["source"]: r["target"] for r in doc["relocations"]}
    assert set(lines) == set(targets.values())

    # Every one of them resolves in the internal registry to the pinned digest.
    vendor_index = bundle_index(world.archive, world.digest)
    pinned_by_vendor = {ref: e["digest"] for ref, e in image_entries(vendor_index).items()}
    for source, target in targets.items():
        assert target.endswith("@" + pinned_by_vendor[source]), (source, target)
        assert target.startswith(f"{internal.host}/platform/demo/"), target
        assert_resolves(judge, internal, target)
    # The multi-arch web image arrives as its index, with both platforms.
    web = json.loads(assert_resolves(judge, internal, targets[WEB_REF]))
    assert web["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in web["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}
    web_repo = PIN.match(targets[WEB_REF]).group("repo")  # type: ignore[union-attr]
    for child in web["manifests"]:
        raw = judge.raw(f"docker://{web_repo}@{child['digest']}", internal)
        assert sha256_digest(raw) == child["digest"]

    # The subchart's worker image, used by its Deployment and by the parent's CronJob.
    workloads = images_by_workload(rendered)
    worker_users = {key for key, images in workloads.items() if targets[WORKER_REF] in images}
    assert ("Deployment", "rel-worker") in worker_users
    assert any(kind == "CronJob" for kind, _ in worker_users), workloads
    api = [images for (kind, name), images in workloads.items() if name.endswith("-api")]
    assert api == [[targets[MIGRATE_REF], targets[API_REF]]]


# ------------------------------------------------------------------------ 2. refusals
def test_unsigned_bundle_is_refused_and_nothing_is_written(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    promoted: Promoted,
    unsigned_archive: Path,
    internal: RegistryServer,
    judge: Judge,
    world: World,
) -> None:
    prefix = prefix_of("unsigned")
    with Unchanged(judge, internal, promoted.prefix, prefix):
        res = promote(pcli, f"archive:{unsigned_archive}", internal.ref(prefix), policy, keys)
        refused(res, 12, "verification step 2 failed", world.digest, "not signed")
    assert repo_tags(judge, internal, prefix) == {}


def test_bundle_signed_by_an_untrusted_key_is_refused(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    promoted: Promoted,
    unsigned_archive: Path,
    internal: RegistryServer,
    judge: Judge,
    world: World,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "stranger.tar"
    shutil.copyfile(unsigned_archive, archive)
    sign(pcli, f"archive:{archive}", keys.private("stranger"))
    prefix = prefix_of("stranger")
    with Unchanged(judge, internal, promoted.prefix, prefix):
        res = promote(pcli, f"archive:{archive}", internal.ref(prefix), policy, keys)
        refused(res, 12, "verification step 2 failed", world.digest, "no trusted key made it")


def test_unapproved_bundle_is_refused_when_the_policy_requires_approval(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    promoted: Promoted,
    internal: RegistryServer,
    judge: Judge,
    world: World,
) -> None:
    prefix = prefix_of("unapproved")
    with Unchanged(judge, internal, promoted.prefix, prefix):
        res = promote(pcli, f"archive:{world.archive}", internal.ref(prefix), policy, keys)
        refused(res, 12, "verification step 4 failed", "'approval'", "valid ones: none")


def test_tampered_layer_is_refused_at_step5_before_anything_is_written(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    promoted: Promoted,
    internal: RegistryServer,
    judge: Judge,
    world: World,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "tampered.tar"
    shutil.copyfile(world.approved_archive, archive)
    api = image_entries(bundle_index(archive, world.digest))[API_REF]
    layer = archive_json(archive, api["digest"])["layers"][0]["digest"]
    flip_member_byte(archive, f"blobs/sha256/{layer[7:]}")
    prefix = prefix_of("tampered")
    with Unchanged(judge, internal, promoted.prefix, prefix):
        res = promote(pcli, f"archive:{archive}", internal.ref(prefix), policy, keys)
        refused(res, 12, "verification step 5 failed", layer)


def test_stray_blob_in_a_layout_is_refused_at_step6(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    promoted: Promoted,
    internal: RegistryServer,
    judge: Judge,
    world: World,
    tmp_path: Path,
) -> None:
    layout = extract(world.approved_archive, tmp_path / "layout")
    stray = b"#!/bin/sh\necho smuggled\n"
    digest = sha256_digest(stray)
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(stray)
    prefix = prefix_of("stray")
    with Unchanged(judge, internal, promoted.prefix, prefix):
        res = promote(pcli, f"oci:{layout}", internal.ref(prefix), policy, keys)
        refused(res, 12, "verification step 6 failed", digest)
    assert digest not in storage_blobs(internal)


def test_promoting_the_same_version_again_is_idempotent(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    promoted: Promoted,
    internal: RegistryServer,
    judge: Judge,
    world: World,
) -> None:
    with Unchanged(judge, internal, promoted.prefix):
        res = promote(pcli, world.staging, internal.ref("platform"), policy, keys, "-o", "json")
        assert res.returncode == 0, res.describe()
    doc = res.json
    assert doc["alreadyPromoted"] is True and doc["dryRun"] is False
    assert doc["recordDigest"] is None
    assert doc["chart"]["digest"] == promoted.chart_digest
    assert doc["relocations"] == promoted.doc["relocations"]


def test_same_version_with_other_content_is_refused(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    promoted: Promoted,
    internal: RegistryServer,
    judge: Judge,
    changed_archive: Path,
) -> None:
    with Unchanged(judge, internal, promoted.prefix):
        res = promote(pcli, f"archive:{changed_archive}", internal.ref("platform"), policy, keys)
        refused(res, 14, internal.ref("platform/demo:1.0.0"), "already promoted", "other content")
    assert judge.manifest_digest(internal, "platform/demo", "1.0.0") == promoted.chart_digest


def test_older_version_is_refused_unless_downgrade_is_allowed(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    example_layout: Path,
    internal: RegistryServer,
    judge: Judge,
    tmp_path: Path,
) -> None:
    chart = tmp_path / "chart" / "demo"
    shutil.copytree(DEMO_CHART, chart)
    meta = chart / "Chart.yaml"
    text = meta.read_text()
    assert re.search(r"^version: 1\.0\.0$", text, re.MULTILINE)
    meta.write_text(re.sub(r"^version: 1\.0\.0$", "version: 1.0.1", text, flags=re.MULTILINE))
    newer = tmp_path / "demo-1.0.1.tar"
    pack_ok(pcli, "--chart", chart, *layout_source(example_layout), "--to", f"archive:{newer}")
    sign(pcli, f"archive:{newer}", keys.private("vendor"))
    approve(pcli, f"archive:{newer}", keys, policy)

    prefix = prefix_of("rollback")
    ok(promote(pcli, f"archive:{newer}", internal.ref(prefix), policy, keys))
    assert "1.0.1" in judge.tags(internal, f"{prefix}/demo")
    with Unchanged(judge, internal, prefix):
        res = promote(pcli, world.staging, internal.ref(prefix), policy, keys)
        refused(res, 14, "demo 1.0.0 is older than 1.0.1", "--allow-downgrade")
    assert "1.0.0" not in judge.tags(internal, f"{prefix}/demo")

    res = promote(
        pcli, world.staging, internal.ref(prefix), policy, keys, "--allow-downgrade", "-o", "json"
    )
    assert res.returncode == 0, res.describe()
    assert res.json["alreadyPromoted"] is False
    tags = judge.tags(internal, f"{prefix}/demo")
    assert "1.0.0" in tags and "1.0.1" in tags


# ------------------------------------------------------------------------ 3. dry run
def test_dry_run_prints_the_plan_and_writes_nothing(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    internal: RegistryServer,
    judge: Judge,
    promoted: Promoted,
    tmp_path: Path,
) -> None:
    prefix = prefix_of("dry")
    out = tmp_path / "deploy"
    with Unchanged(judge, internal, promoted.prefix, prefix):
        res = promote(
            pcli,
            world.staging,
            internal.ref(prefix),
            policy,
            None,
            "--dry-run",
            "--out",
            out,
            "-o",
            "json",
        )
        assert res.returncode == 0, res.describe()
    doc = res.json
    assert doc["dryRun"] is True and doc["alreadyPromoted"] is False
    assert doc["recordDigest"] is None
    assert doc["chart"]["reference"] == internal.ref(f"{prefix}/demo:1.0.0")
    targets = {r["source"]: r["target"] for r in doc["relocations"]}
    assert sorted(targets) == sorted(EXAMPLE_REFS)
    for source, target in targets.items():
        name = source.split("/", 1)[1].split(":")[0]  # demo/web
        assert target.startswith(internal.ref(f"{prefix}/{name}:1.0.0@sha256:")), target
    assert sorted(doc["valuesChanged"]) == [  # the values differential rendering found
        "api.image",
        "api.migrate.image",
        "web.image.registry",
        "web.image.repository",
        "web.image.tag",
        "worker.image.repository",
        "worker.image.tag",
    ]
    assert not out.exists()
    assert repo_tags(judge, internal, prefix) == {}


# ------------------------------------------------------------------ 4. promotion record
def test_promotion_record_verifies_with_the_promoter_key_only(
    pcli: Cli,
    keys: Keys,
    promoted: Promoted,
    world: World,
    internal: RegistryServer,
    judge: Judge,
) -> None:
    chart_ref = internal.ref("platform/demo:1.0.0")
    res = ok(
        pcli("verify", chart_ref, "--promotion", "--key", keys.public("promoter"), "-o", "json")
    )
    record = res.json
    assert record["kind"] == "BundlePromotion"
    assert record["bundle"]["digest"] == world.digest
    assert (record["bundle"]["name"], record["bundle"]["version"]) == ("demo", "1.0.0")
    assert record["chart"]["digest"] == promoted.chart_digest
    assert {(s["key"], s["role"]) for s in record["signers"]} == {
        ("vendor", "vendor"),
        ("approver", "approval"),
    }
    text = ok(pcli("verify", chart_ref, "--promotion", "--key", keys.public("promoter")))
    assert text.stdout.startswith(promoted.chart_digest)
    assert world.digest in text.stdout

    for other in ("stranger", "vendor"):
        res = pcli("verify", chart_ref, "--promotion", "--key", keys.public(other))
        refused(res, 12, promoted.chart_digest, "no promotion record signed by")
    # The record is attached to the chart (tag-schema fallback on distribution 2.8).
    assert promoted.chart_digest.replace(":", "-") in judge.tags(internal, "platform/demo")


# --------------------------------------------------------------------- 5. Argo CD files
def test_out_writes_an_argocd_application_and_repository_secret(
    promoted: Promoted,
    internal: RegistryServer,
    shared_data: Path,
) -> None:
    application = yaml.safe_load((promoted.out / "application.yaml").read_text())
    jsonschema.validate(application, argocd_schema(shared_data))
    assert application["apiVersion"] == "argoproj.io/v1alpha1"
    assert application["kind"] == "Application"
    source = application["spec"]["source"]
    assert source["repoURL"] == internal.ref("platform")
    assert not source["repoURL"].startswith("oci://")
    assert (source["chart"], source["targetRevision"]) == ("demo", "1.0.0")
    assert application["spec"]["destination"]["namespace"] == "demo-prod"

    secret = yaml.safe_load((promoted.out / "repository-secret.yaml").read_text())
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["labels"]["argocd.argoproj.io/secret-type"] == "repository"
    data = secret["stringData"]
    assert data["type"] == "helm" and data["enableOCI"] == "true"
    assert data["url"] == internal.ref("platform")
    record = json.loads((promoted.out / "promotion.json").read_text())
    assert record["chart"]["digest"] == promoted.chart_digest


def test_argocd_choices_of_the_command_line_reach_the_application(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    internal: RegistryServer,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    ca = generate_server_certs(tmp_path / "pki").ca_cert
    out = tmp_path / "deploy"
    flags = ["--app-name", "shop-demo", "--project", "platform", "--sync-policy", "auto"]
    flags += ["--track", "1.x", "--dest-server", "https://10.1.2.3:6443"]
    flags += ["--dest-namespace", "shop", "--ca-file", str(ca)]
    res = promote(
        pcli, world.staging, internal.ref(prefix_of("argo")), policy, keys, "--out", out, *flags
    )
    assert res.returncode == 0, res.describe()
    application = yaml.safe_load((out / "application.yaml").read_text())
    jsonschema.validate(application, argocd_schema(shared_data))
    assert application["metadata"]["name"] == "shop-demo"
    spec = application["spec"]
    assert spec["project"] == "platform"
    assert spec["destination"] == {"server": "https://10.1.2.3:6443", "namespace": "shop"}
    assert spec["syncPolicy"] == {"automated": {"prune": True, "selfHeal": True}}
    assert spec["source"]["targetRevision"] == "1.x"
    certs = yaml.safe_load((out / "tls-certs.yaml").read_text())
    assert certs["metadata"]["name"] == "argocd-tls-certs-cm"
    assert certs["data"] == {"127.0.0.1": ca.read_text()}


# ----------------------------------------------------------------------- 6. mirror mode
def mirror_promotion(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    internal: RegistryServer,
    out: Path,
    *flags: str,
) -> tuple[str, Result]:
    prefix = prefix_of("mirror")
    res = promote(
        pcli,
        world.staging,
        internal.ref(prefix),
        policy,
        keys,
        "--mirror-mode",
        "--out",
        out,
        "-o",
        "json",
        *flags,
    )
    assert res.returncode == 0, res.describe()
    return prefix, res


def test_mirror_mode_keeps_the_chart_and_writes_containerd_hosts(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    internal: RegistryServer,
    judge: Judge,
    tmp_path: Path,
) -> None:
    out = tmp_path / "deploy"
    prefix, res = mirror_promotion(pcli, keys, policy, world, internal, out)
    doc = res.json
    assert doc["mode"] == "mirror"
    # The chart is the vendor's, byte for byte.
    vendor_chart = chart_entry(bundle_index(world.archive, world.digest))
    assert judge.manifest_digest(internal, f"{prefix}/demo", "1.0.0") == vendor_chart["digest"]
    vendor_layer = [
        layer
        for layer in archive_json(world.archive, vendor_chart["digest"])["layers"]
        if layer["mediaType"] == HELM_CHART
    ]
    assert len(vendor_layer) == 1
    pushed = json.loads(judge.manifest(internal, f"{prefix}/demo", "1.0.0").content)
    pushed_layer = [x for x in pushed["layers"] if x["mediaType"] == HELM_CHART]
    assert pushed_layer[0]["digest"] == vendor_layer[0]["digest"]
    assert registry_blob(internal, f"{prefix}/demo", pushed_layer[0]["digest"]) == archive_blob(
        world.archive, vendor_layer[0]["digest"]
    )
    # Images under PREFIX/<upstream host>/<repository>, by tag and digest.
    targets = {r["source"]: r["target"] for r in doc["relocations"]}
    for source, target in targets.items():
        upstream = source.split(":")[0]  # example.local/demo/web
        assert target.startswith(internal.ref(f"{prefix}/{upstream}:1.0.0@sha256:")), target
        assert_resolves(judge, internal, target)
    # containerd: example.local is served by the mirror path alone (override_path), with no
    # fallback to example.local itself; the file says how nodes authenticate to the mirror.
    text = (out / "certs.d" / "example.local" / "hosts.toml").read_text()
    hosts = tomllib.loads(text)
    assert hosts["server"].split("://", 1)[1] == f"{internal.host}/v2/{prefix}/example.local"
    assert "host" not in hosts
    assert hosts["override_path"] is True
    assert set(hosts["capabilities"]) == {"pull", "resolve"}
    assert f"# If {internal.host} asks for credentials" in text
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "application.yaml",
        "certs.d/example.local/hosts.toml",
        "promotion.json",
        "repository-secret.yaml",
    ]


def test_mirror_mode_hosts_toml_speaks_plain_http_and_falls_back_only_when_asked(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    internal: RegistryServer,
    tmp_path: Path,
) -> None:
    """Promoted with ``--plain-http``: containerd must reach the mirror over HTTP too.

    And with ``--hosts-fallback`` the upstream is containerd's fallback after the mirror.
    """
    out = tmp_path / "deploy"
    prefix, _ = mirror_promotion(
        pcli, keys, policy, world, internal, out, "--plain-http", "--hosts-fallback"
    )
    hosts = tomllib.loads((out / "certs.d" / "example.local" / "hosts.toml").read_text())
    assert list(hosts["host"]) == [f"http://{internal.host}/v2/{prefix}/example.local"]
    assert hosts["server"] == "https://example.local"


# ------------------------------------------------------------------------ 7. flat layout
def test_flat_layout_puts_images_directly_under_the_prefix(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    internal: RegistryServer,
    judge: Judge,
    helm: str,
    tmp_path: Path,
) -> None:
    prefix = prefix_of("flat")
    res = ok(
        promote(
            pcli,
            world.staging,
            internal.ref(prefix),
            policy,
            keys,
            "--layout",
            "flat",
            "-o",
            "json",
        )
    )
    targets = {r["source"]: r["target"] for r in res.json["relocations"]}
    for source, target in targets.items():
        name = source.rsplit("/", 1)[1].split(":")[0]  # web
        assert target.startswith(internal.ref(f"{prefix}/{name}:1.0.0@sha256:")), target
        assert_resolves(judge, internal, target)
    assert sorted(catalog_under(internal, prefix)) == sorted(
        [f"{prefix}/{n}" for n in ("api", "demo", "migrate", "web", "worker")]
    )
    _, rendered = pull_and_template(helm, tmp_path, internal, prefix)
    assert set(image_lines(rendered)) == set(targets.values())


def catalog_under(reg: RegistryServer, prefix: str) -> list[str]:
    return [r for r in catalog(reg) if r.startswith(prefix + "/")]


def test_mirror_mode_same_version_with_other_images_is_refused(
    pcli: Cli,
    keys: Keys,
    policy: Path,
    world: World,
    internal: RegistryServer,
    judge: Judge,
    changed_archive: Path,
    tmp_path: Path,
) -> None:
    """Mirror mode keeps the chart byte-identical, so the chart alone cannot tell two bundles
    of one version apart: a bundle whose migrate:1.0.0 is other content must not be reported
    as already promoted (its image never reaching the mirror), nor move the mirror's tag."""
    prefix, _ = mirror_promotion(pcli, keys, policy, world, internal, tmp_path / "first")
    migrate_repo = f"{prefix}/example.local/demo/migrate"
    before = judge.manifest_digest(internal, migrate_repo, "1.0.0")
    with Unchanged(judge, internal, prefix):
        res = promote(
            pcli, f"archive:{changed_archive}", internal.ref(prefix), policy, keys, "--mirror-mode"
        )
        refused(res, 14, internal.ref(f"{prefix}/demo:1.0.0"), "already promoted")
    assert judge.manifest_digest(internal, migrate_repo, "1.0.0") == before
