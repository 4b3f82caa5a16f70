"""Fault injection against a real registry: bundler either completes or fails clearly.

Every scenario puts :class:`harness.faultproxy.FaultProxy` between the bundler CLI and a real
``docker-registry`` (or kills that registry, or limits the size of files bundler may write, or
runs two promotions at once), then holds the outcome to one rule:

* **completed**: exit 0, and the result is whole by judges other than bundler (skopeo
  ``inspect --raw`` digests, raw ``HEAD`` of every blob, the registry's storage directory, the
  bytes of an archive or the files of a layout); or
* **failed clearly**: a non-zero exit of the right family, exactly one ``error: ...`` line on
  stderr naming what failed, nothing under the target's name (tag, layout ref, archive file);
  then the same command without faults completes, as above.

Never a silent success, and never a tag on incomplete content: the proxy snapshots the
registry's storage at the moment each watched tag write arrives (before it is forwarded) and
every snapshot must already hold the whole graph under that tag.

The module prints a tally (scenarios, faults injected by kind, outcomes) at its end.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from copy_support import Cli, Judge, Result, layout_index, sha256_digest, unique
from harness.faultproxy import Fault, FaultProxy, Rule
from harness.registry import RegistryServer, start_registry
from pack_support import pack_cli
from transfer_support import (
    PASS_VAR,
    PASSPHRASE,
    Graph,
    Keys,
    archive_graph,
    import_,
    make_keys,
    ok,
    pack,
    registry_graph,
    sign,
    storage_blobs,
    verified,
)

MiB = 1024 * 1024
APP_REF = "example.local/faults/app:1.0.0"
LAYER_BYTES = (6 * MiB, 5 * MiB, 4 * MiB)
TAG = "1.0.0"
BUNDLE_NAME = "demo:1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"
POLICY = (
    "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
    "  - name: vendor\n    role: vendor\n    path: {vendor}\n"
    "  - name: approver\n    role: approval\n    path: {approver}\n"
    "bundles:\n  - name: demo\n    versions: '>=1.0.0 <2.0.0'\n    require:\n"
    "      - role: vendor\n      - role: approval\n"
)
COMPLETED = "completed"
FAILED = "failed clearly, re-run completed"
UNCLEAR = "failed WITHOUT a clear error (bug), re-run completed"
LOST_RECORD = "completed, but a reported promotion record is not attached (bug)"
EITHER = "either"


# ---------------------------------------------------------------------------------- tally
@dataclass
class Tally:
    """What the module did, printed at its end (the figures of docs/reliability.md)."""

    outcomes: dict[str, str] = field(default_factory=dict)
    injected: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: int = 0
    tag_writes_checked: int = 0
    incomplete_tags: int = 0
    silent_successes: int = 0
    records_not_attached: int = 0

    def record(self, name: str, outcome: str) -> None:
        assert name not in self.outcomes, f"scenario {name} recorded twice"
        self.outcomes[name] = outcome

    def lines(self) -> list[str]:
        by_outcome = collections.Counter(self.outcomes.values())
        out = [
            f"fault scenarios: {len(self.outcomes)} "
            f"({by_outcome[COMPLETED]} completed, {by_outcome[FAILED]} failed clearly then "
            f"re-run completed, {by_outcome[UNCLEAR]} failed without a clear error then re-run "
            f"completed, {by_outcome[LOST_RECORD]} completed but lost a promotion record)",
            f"faults injected: {sum(self.injected.values())} "
            + json.dumps(dict(sorted(self.injected.items())))
            + f" over {self.requests} proxied requests",
            f"tag writes checked mid-operation: {self.tag_writes_checked}; on incomplete "
            f"content: {self.incomplete_tags}; silent successes: {self.silent_successes}; "
            f"promotion records reported but not attached: {self.records_not_attached}",
        ]
        out += [f"  {name}: {outcome}" for name, outcome in self.outcomes.items()]
        return out


TALLY = Tally()


class _TallyPlugin:
    """Prints the tally in pytest's terminal summary (output of fixtures is captured)."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if TALLY.outcomes:
            terminalreporter.section("fault injection tally")
            for line in TALLY.lines():
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def tally_report(request: pytest.FixtureRequest) -> Tally:
    manager = request.config.pluginmanager
    if manager.get_plugin("fault-injection-tally") is None:
        manager.register(_TallyPlugin(), "fault-injection-tally")
    return TALLY


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def upstream(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """The registry behind the proxy (plain HTTP, loopback), for this module only."""
    server = start_registry(
        "plain", tmp_path_factory.mktemp("faults-registry"), binary=registry_binary
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxies() -> Iterator[Callable[[RegistryServer], FaultProxy]]:
    """``proxies(registry) -> FaultProxy`` in front of it; all stopped (and their counters
    added to the tally) at teardown; no thread may outlive its proxy."""
    started: list[FaultProxy] = []

    def _start(reg: RegistryServer, seed: int = 20240611) -> FaultProxy:
        proxy = FaultProxy(reg.host, seed=seed).start()
        started.append(proxy)
        return proxy

    yield _start
    for proxy in started:
        proxy.stop()
        TALLY.injected.update(proxy.injected)
        TALLY.requests += proxy.requests
    for proxy in started:
        assert not proxy.leaked_threads, proxy.leaked_threads
        assert not proxy.hook_errors, proxy.hook_errors


@pytest.fixture
def proxy(proxies: Callable[[RegistryServer], FaultProxy], upstream: RegistryServer) -> FaultProxy:
    return proxies(upstream)


@pytest.fixture
def fcli(helm: str, tmp_path: Path) -> Cli:
    """The CLI with a private Docker config and blob-location cache (so no test mounts what
    another test uploaded) and the key passphrase in its environment."""
    cli = pack_cli(tmp_path / "user", helm)
    cli.env[PASS_VAR] = PASSPHRASE
    return cli


@dataclass(frozen=True)
class App:
    """An image of three stored (level 0) layers of several MiB, in an OCI layout."""

    layout: Path
    digest: str
    manifest_size: int
    blobs: dict[str, int]  # config and layers
    largest: str  # the digest of the largest layer

    @property
    def source(self) -> str:
        return f"oci:{self.layout}:{APP_REF}"


@pytest.fixture(scope="module")
def app(synth: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> App:
    layout = tmp_path_factory.mktemp("faults-app") / "layout"
    desc = synth.write_image(
        layout,
        APP_REF,
        [synth.LayerSpec(f"faults-layer-{i}", size, level=0) for i, size in enumerate(LAYER_BYTES)],
    )
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    blobs = {d["digest"]: d["size"] for d in [manifest["config"], *manifest["layers"]]}
    largest = max(manifest["layers"], key=lambda d: d["size"])["digest"]
    return App(layout, desc["digest"], desc["size"], blobs, largest)


@pytest.fixture(scope="module")
def app_in_registry(
    app: App, upstream: RegistryServer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The app image pushed (without faults) to the upstream registry; its repository."""
    cli = Cli(tmp_path_factory.mktemp("faults-seed") / "user")
    repo = "seed/app"
    ok(cli.copy(app.source, upstream.ref(f"{repo}:{TAG}")))
    return repo


@dataclass(frozen=True)
class Bundle:
    digest: str
    signed: Path  # vendor-signed archive
    approved: Path  # the same, approved too
    graph: Graph  # everything under the bundle index
    keys: Keys
    policy: Path
    vendor_repo: str  # the bundle in the upstream registry, imported without faults
    reference_export: Path  # an export of it without faults, named demo:1.0.0


@pytest.fixture(scope="module")
def bundle(
    helm: str,
    synth: ModuleType,
    example_layout: Path,
    app: App,
    upstream: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Bundle:
    """The example bundle plus the app image: packed, signed by the vendor, approved (in a
    copy), imported into the upstream registry and exported again, all without faults."""
    home = tmp_path_factory.mktemp("faults-bundle")
    cli = pack_cli(home / "user", helm)
    cli.env[PASS_VAR] = PASSPHRASE
    (home / "keys").mkdir()
    keys = make_keys(home / "keys", "vendor", "approver", "promoter")
    policy = home / "trust-policy.yaml"
    policy.write_text(POLICY.format(vendor=keys.public("vendor"), approver=keys.public("approver")))
    layout = home / "layout"
    shutil.copytree(example_layout, layout)
    synth.write_image(
        layout,
        APP_REF,
        [synth.LayerSpec(f"faults-layer-{i}", size, level=0) for i, size in enumerate(LAYER_BYTES)],
    )
    signed = home / "signed.tar"
    digest = pack(cli, layout, f"archive:{signed}", "--image", APP_REF)
    sign(cli, f"archive:{signed}", keys.private("vendor"))
    approved = home / "approved.tar"
    shutil.copyfile(signed, approved)
    res = ok(
        cli(
            "approve",
            f"archive:{approved}",
            "--key",
            keys.private("approver"),
            "--passphrase-env",
            PASS_VAR,
            "--policy",
            policy,
        )
    )
    assert "approved by approver (approval)" in res.stdout
    vendor_repo = "vendor/demo"
    ok(import_(cli, signed, upstream.ref(f"{vendor_repo}:{TAG}"), keys.public("vendor")))
    reference = home / "reference.tar"
    ok(
        cli(
            "export",
            upstream.ref(f"{vendor_repo}:{TAG}"),
            "--to",
            f"archive:{reference}:{BUNDLE_NAME}",
            "-o",
            "json",
        )
    )
    graph = archive_graph(signed, digest)
    assert app.largest in graph.blobs
    return Bundle(digest, signed, approved, graph, keys, policy, vendor_repo, reference)


# ------------------------------------------------------------------- registry storage
def storage_paths(reg: RegistryServer) -> frozenset[str]:
    """Every committed file of the registry's storage (blob data, repository links, tags);
    upload sessions left out. Robust against files coming and going during the walk."""
    root = reg.storage_dir / "docker" / "registry" / "v2"
    found: set[str] = set()
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "_uploads"]
        rel = os.path.relpath(directory, root)
        found.update(os.path.join(rel, f) for f in files)
    return frozenset(found)


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def has_blob(snap: frozenset[str], repo: str, digest: str) -> bool:
    h = _hex(digest)
    return (
        f"blobs/sha256/{h[:2]}/{h}/data" in snap
        and f"repositories/{repo}/_layers/sha256/{h}/link" in snap
    )


def has_manifest(snap: frozenset[str], repo: str, digest: str) -> bool:
    h = _hex(digest)
    return (
        f"blobs/sha256/{h[:2]}/{h}/data" in snap
        and f"repositories/{repo}/_manifests/revisions/sha256/{h}/link" in snap
    )


def has_tag(snap: frozenset[str], repo: str, tag: str) -> bool:
    return f"repositories/{repo}/_manifests/tags/{tag}/current/link" in snap


def missing_from(snap: frozenset[str], repo: str, graph: Graph) -> list[str]:
    return [m for m in graph.manifests if not has_manifest(snap, repo, m)] + [
        b for b in graph.blobs if not has_blob(snap, repo, b)
    ]


class TagWatch:
    """Snapshots the registry's storage whenever a write of ``repo:tag`` reaches the proxy,
    before it is forwarded; :meth:`check` then requires the whole graph in every snapshot."""

    def __init__(self, proxy: FaultProxy, reg: RegistryServer, repo: str, tag: str = TAG) -> None:
        self.reg, self.repo, self.tag = reg, repo, tag
        self.path = f"/v2/{repo}/manifests/{tag}"
        self.snapshots: list[frozenset[str]] = []
        proxy.on_request(self)

    def __call__(self, method: str, target: str) -> None:
        if method == "PUT" and target.split("?", 1)[0] == self.path:
            self.snapshots.append(storage_paths(self.reg))

    def check(
        self, graph: Graph, extra: Callable[[frozenset[str]], list[str]] | None = None
    ) -> None:
        assert self.snapshots, f"no write of {self.repo}:{self.tag} was seen"
        for snap in self.snapshots:
            TALLY.tag_writes_checked += 1
            missing = missing_from(snap, self.repo, graph) + (extra(snap) if extra else [])
            if missing:
                TALLY.incomplete_tags += 1
            assert not missing, f"{self.repo}:{self.tag} written while missing {missing}"


# ----------------------------------------------------------------------------- judging
def app_graph(app: App) -> Graph:
    return Graph([app.digest], dict(app.blobs))


def argv_of(proc: subprocess.Popen[str]) -> list[str]:
    """The command line ``proc`` was started with."""
    assert isinstance(proc.args, list)
    return [str(a) for a in proc.args]


def failed_clearly(res: Result, codes: set[int], *named: str) -> str:
    """A non-zero exit of an expected family and one ``error:`` line naming what failed."""
    assert res.returncode in codes, res.describe()
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.describe()
    assert lines[0].startswith("error: "), res.describe()
    for name in named:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    res.assert_no_result()
    return lines[0]


@dataclass
class Scenario:
    """One fault scenario: the first run under faults, then (after a failure) a clean re-run.

    ``complete(result)`` judges a success independently; ``not_named()`` checks that nothing
    is under the target's name after a failure; ``rerun()`` runs the same command again."""

    name: str
    proxy: FaultProxy | None
    run: Callable[[], Result]
    complete: Callable[[Result], None]
    not_named: Callable[[], None]
    expect: str = EITHER
    codes: set[int] = field(default_factory=lambda: {5})
    named: tuple[str, ...] = ()

    def play(self) -> tuple[Result, Result | None]:
        first = self.run()
        if first.returncode == 0:
            assert self.expect in (COMPLETED, EITHER), (
                f"{self.name}: expected a clear failure\n{first.describe()}"
            )
            try:
                self.complete(first)
            except AssertionError:
                TALLY.silent_successes += 1
                raise
            TALLY.record(self.name, COMPLETED)
            return first, None
        assert self.expect in (FAILED, EITHER), (
            f"{self.name}: expected completion\n{first.describe()}"
        )
        failed_clearly(first, self.codes, *self.named)
        self.not_named()
        if self.proxy is not None:
            self.proxy.clear()
        again = self.run()
        assert again.returncode == 0, again.describe()
        self.complete(again)
        TALLY.record(self.name, FAILED)
        return first, again


def registry_complete(
    judge: Judge, reg: RegistryServer, repo: str, digest: str, graph: Graph
) -> None:
    """skopeo reads the tag as ``digest``; every manifest and blob is there, by HEAD/GET and
    in the storage of that repository."""
    assert judge.raw_digest(reg.docker_ref(f"{repo}:{TAG}"), reg) == digest
    for blob, size in graph.blobs.items():
        assert judge.blob_size(reg, repo, blob) == size, blob
    for manifest in graph.manifests:
        assert judge.manifest_digest(reg, repo, manifest) == manifest
    assert not missing_from(storage_paths(reg), repo, graph)


def not_tagged(judge: Judge, reg: RegistryServer, repo: str, tag: str = TAG) -> None:
    assert tag not in judge.tags(reg, repo), f"{repo}:{tag} exists after a failure"
    assert not has_tag(storage_paths(reg), repo, tag)


def layout_complete(layout: Path, ref: str, digest: str, graph: Graph) -> None:
    entries = [
        m
        for m in layout_index(layout)["manifests"]
        if (m.get("annotations") or {}).get(REF_NAME) == ref
    ]
    assert [e["digest"] for e in entries] == [digest]
    for d in [*graph.manifests, *graph.blobs]:
        path = layout / "blobs" / "sha256" / _hex(d)
        assert sha256_file(path) == d, d


def layout_not_named(layout: Path, ref: str) -> None:
    if (layout / "index.json").exists():
        names = [
            (m.get("annotations") or {}).get(REF_NAME) for m in layout_index(layout)["manifests"]
        ]
        assert ref not in names, f"{layout} names {ref} after a failure"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def quoted(digest: str) -> str:
    """How a digest appears in an upload's query string (``digest=sha256%3A...``)."""
    return "sha256%3A" + _hex(digest)


# ================================================================ 1. uploads (bundler copy)
PUT_UPLOAD = r"^/v2/[^?]+/blobs/uploads/[^?]+\?"
POST_UPLOAD = r"^/v2/[^?]+/blobs/uploads/$"
TAG_PUT = r"/manifests/1\.0\.0$"
DIGEST_PUT = r"/manifests/sha256:"


def _upload_rules(case: str, app: App) -> tuple[list[Rule], list[str], str, tuple[str, ...]]:
    """(rules, extra copy flags, expected outcome, words the error line must hold)."""
    if case == "503-on-blob-put-twice":
        return [Rule("PUT", PUT_UPLOAD, Fault("status", status=503), nth={1, 2})], [], COMPLETED, ()
    if case == "429-retry-after-on-upload-post":
        return (
            [Rule("POST", POST_UPLOAD, Fault("status", status=429, retry_after=1), nth={1, 2})],
            [],
            COMPLETED,
            (),
        )
    if case == "reset-mid-blob-put-and-after-commit":
        return (
            [
                Rule("PUT", PUT_UPLOAD, Fault("reset", "request_body", after_bytes=MiB), nth={1}),
                Rule("PUT", PUT_UPLOAD, Fault("reset", "response"), nth={3}),
            ],
            [],
            COMPLETED,
            (),
        )
    if case == "503-on-every-put-of-one-layer":
        return (
            [
                Rule(
                    "PUT",
                    PUT_UPLOAD + ".*" + quoted(app.largest),
                    Fault("status", status=503),
                    every=True,
                )
            ],
            [],
            FAILED,
            (app.largest, "HTTP 503"),
        )
    if case == "chunked-upload-reset-mid-patch-and-502":
        return (
            [
                Rule(
                    "PATCH",
                    r"/blobs/uploads/",
                    Fault("reset", "request_body", after_bytes=512 * 1024),
                    nth={2},
                ),
                Rule("PATCH", r"/blobs/uploads/", Fault("status", status=502), nth={5}),
            ],
            ["--chunk-size", "1"],
            COMPLETED,
            (),
        )
    if case == "manifest-put-reset-after-commit":
        return (
            [
                Rule("PUT", DIGEST_PUT, Fault("reset", "response"), nth={1}),
                Rule("PUT", TAG_PUT, Fault("reset", "response"), nth={1}),
            ],
            [],
            COMPLETED,
            (),
        )
    if case == "tag-put-500-every-time":
        return (
            [Rule("PUT", TAG_PUT, Fault("status", status=500), every=True)],
            [],
            FAILED,
            ("manifest upload", "HTTP 500"),
        )
    if case == "v2-probe-502-twice":
        return [Rule("GET", r"^/v2/$", Fault("status", status=502), nth={1, 2})], [], COMPLETED, ()
    if case == "v2-probe-reset-every-time":
        return (
            [Rule("GET", r"^/v2/$", Fault("reset"), every=True)],
            [],
            FAILED,
            ("cannot reach registry",),
        )
    if case == "tag-put-stall-2s":
        return [Rule("PUT", TAG_PUT, Fault("stall", seconds=2.0), nth={1})], [], COMPLETED, ()
    if case == "seeded-chaos-503-and-resets":
        return (
            [
                Rule(None, r"^/v2/.", Fault("status", status=503), probability=0.12),
                Rule(None, r"^/v2/.", Fault("reset"), probability=0.05),
            ],
            [],
            EITHER,
            (),
        )
    raise AssertionError(case)


UPLOAD_CASES = [
    "503-on-blob-put-twice",
    "429-retry-after-on-upload-post",
    "reset-mid-blob-put-and-after-commit",
    "503-on-every-put-of-one-layer",
    "chunked-upload-reset-mid-patch-and-502",
    "manifest-put-reset-after-commit",
    "tag-put-500-every-time",
    "v2-probe-502-twice",
    "v2-probe-reset-every-time",
    "tag-put-stall-2s",
    "seeded-chaos-503-and-resets",
]


@pytest.mark.parametrize("case", UPLOAD_CASES)
def test_copy_into_a_faulty_registry(
    case: str,
    app: App,
    fcli: Cli,
    proxy: FaultProxy,
    upstream: RegistryServer,
    judge: Judge,
) -> None:
    rules, flags, expect, named = _upload_rules(case, app)
    proxy.add(*rules)
    repo = unique("up")
    watch = TagWatch(proxy, upstream, repo)

    def run() -> Result:
        return fcli.copy(app.source, proxy.ref(f"{repo}:{TAG}"), *flags)

    def complete(res: Result) -> None:
        assert res.json["digest"] == app.digest
        registry_complete(judge, upstream, repo, app.digest, app_graph(app))
        watch.check(app_graph(app))

    Scenario(
        f"copy/upload: {case}",
        proxy,
        run,
        complete,
        lambda: not_tagged(judge, upstream, repo),
        expect,
        {5},
        named,
    ).play()
    assert proxy.total_injected >= 1, "no fault was injected"
    # How long the client waits (Retry-After, back-off) is proven without a clock in
    # tests/unit/test_client_retries.py, where the client's sleep is injected and recorded.


# ============================================================== 2. downloads (bundler copy)
BLOB_GET = r"^/v2/[^?]+/blobs/sha256:"


def _download_rules(case: str, app: App) -> tuple[list[Rule], str, set[int], tuple[str, ...]]:
    """(rules, expected outcome, exit codes allowed for a failure, words of the error)."""
    largest = r"/blobs/" + app.largest + "$"
    if case == "truncated-blob-once":
        return (
            [Rule("GET", BLOB_GET, Fault("truncate", after_bytes=MiB), nth={1})],
            COMPLETED,
            set(),
            (),
        )
    if case == "truncated-layer-every-time":
        return [Rule("GET", largest, Fault("truncate"), every=True)], FAILED, {5, 6}, (app.largest,)
    if case == "content-length-longer-every-time":
        return (
            [Rule("GET", largest, Fault("lie_length", delta=MiB), every=True)],
            FAILED,
            {5, 6},
            (app.largest,),
        )
    if case == "content-length-shorter-every-time":
        return (
            [Rule("GET", largest, Fault("lie_length", delta=-4096), every=True)],
            FAILED,
            {5, 6},
            (app.largest,),
        )
    if case == "manifest-content-length-shorter":
        return (
            [Rule("GET", TAG_PUT, Fault("lie_length", delta=-16), every=True)],
            FAILED,
            {6, 7},
            ("1.0.0",),
        )
    if case == "manifest-get-503-once":
        return (
            [Rule("GET", r"/manifests/", Fault("status", status=503), nth={1})],
            COMPLETED,
            set(),
            (),
        )
    if case == "reset-mid-blob-body-twice":
        return (
            [Rule("GET", BLOB_GET, Fault("reset", "response_body", after_bytes=MiB), nth={1, 2})],
            COMPLETED,
            set(),
            (),
        )
    if case == "blob-get-stall-3s":
        return (
            [Rule("GET", largest, Fault("stall", "response", seconds=3.0), nth={1})],
            COMPLETED,
            set(),
            (),
        )
    raise AssertionError(case)


DOWNLOAD_CASES = [
    "truncated-blob-once",
    "truncated-layer-every-time",
    "content-length-longer-every-time",
    "content-length-shorter-every-time",
    "manifest-content-length-shorter",
    "manifest-get-503-once",
    "reset-mid-blob-body-twice",
    "blob-get-stall-3s",
]


@pytest.mark.parametrize("case", DOWNLOAD_CASES)
def test_copy_out_of_a_faulty_registry(
    case: str,
    app: App,
    app_in_registry: str,
    fcli: Cli,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    rules, expect, codes, named = _download_rules(case, app)
    proxy.add(*rules)
    layout = tmp_path / "out"

    def run() -> Result:
        return fcli.copy(proxy.ref(f"{app_in_registry}:{TAG}"), f"oci:{layout}:app")

    Scenario(
        f"copy/download: {case}",
        proxy,
        run,
        lambda res: layout_complete(layout, "app", app.digest, app_graph(app)),
        lambda: layout_not_named(layout, "app"),
        expect,
        codes,
        named,
    ).play()
    assert proxy.total_injected >= 1, "no fault was injected"


# ===================================================================== 3. export / import
def test_export_through_transient_faults_is_byte_identical(
    bundle: Bundle,
    fcli: Cli,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    proxy.add(
        Rule("GET", BLOB_GET, Fault("reset", "response_body", after_bytes=MiB), nth={1}),
        Rule("GET", BLOB_GET, Fault("truncate"), nth={3}),
        Rule("GET", r"/manifests/", Fault("status", status=503), nth={2}),
        Rule("HEAD", r"/manifests/", Fault("status", status=429, retry_after=1), nth={1}),
    )
    archive = tmp_path / "demo.tar"

    def run() -> Result:
        return fcli(
            "export",
            proxy.ref(f"{bundle.vendor_repo}:{TAG}"),
            "--to",
            f"archive:{archive}:{BUNDLE_NAME}",
            "-o",
            "json",
        )

    def complete(res: Result) -> None:
        assert res.json["digest"] == bundle.digest
        assert archive.read_bytes() == bundle.reference_export.read_bytes()
        assert not (tmp_path / f".{archive.name}.partial").exists()

    Scenario(
        "export: resets, truncation, 503, 429 (transient)",
        proxy,
        run,
        complete,
        lambda: None,
        COMPLETED,
    ).play()
    assert proxy.total_injected == 4


def test_export_failing_on_one_layer_leaves_no_archive_and_a_rerun_completes(
    bundle: Bundle,
    app: App,
    fcli: Cli,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    proxy.add(Rule("GET", r"/blobs/" + app.largest + "$", Fault("status", status=503), every=True))
    archive = tmp_path / "demo.tar"

    def run() -> Result:
        return fcli(
            "export",
            proxy.ref(f"{bundle.vendor_repo}:{TAG}"),
            "--to",
            f"archive:{archive}:{BUNDLE_NAME}",
            "-o",
            "json",
        )

    def complete(res: Result) -> None:
        assert res.json["digest"] == bundle.digest
        assert archive.read_bytes() == bundle.reference_export.read_bytes()

    def not_named() -> None:
        assert not archive.exists()

    Scenario(
        "export: 503 on every GET of one layer",
        proxy,
        run,
        complete,
        not_named,
        FAILED,
        {5},
        (app.largest, "HTTP 503"),
    ).play()


def test_import_through_transient_faults_completes_and_verifies(
    bundle: Bundle,
    fcli: Cli,
    proxy: FaultProxy,
    upstream: RegistryServer,
    judge: Judge,
) -> None:
    proxy.add(
        Rule("PUT", PUT_UPLOAD, Fault("reset", "request_body", after_bytes=2 * MiB), nth={2}),
        Rule("PUT", PUT_UPLOAD, Fault("status", status=503), nth={4}),
        Rule("HEAD", BLOB_GET, Fault("status", status=429, retry_after=1), nth={1}),
        Rule("PUT", DIGEST_PUT, Fault("reset", "response"), nth={1}),
        Rule("POST", POST_UPLOAD, Fault("status", status=502), nth={3}),
    )
    repo = unique("imp")
    watch = TagWatch(proxy, upstream, repo)

    def run() -> Result:
        return import_(
            fcli, bundle.signed, proxy.ref(f"{repo}:{TAG}"), bundle.keys.public("vendor")
        )

    def complete(res: Result) -> None:
        assert res.json["digest"] == bundle.digest
        registry_complete(judge, upstream, repo, bundle.digest, bundle.graph)
        watch.check(bundle.graph)
        verified(fcli, upstream.ref(f"{repo}:{TAG}"), bundle.keys.public("vendor"))

    Scenario(
        "import: reset mid-upload, 503, 429, 502, reset after manifest commit",
        proxy,
        run,
        complete,
        lambda: None,
        COMPLETED,
    ).play()
    assert proxy.total_injected == 5


def test_import_whose_tag_write_fails_tags_nothing_and_a_rerun_completes(
    bundle: Bundle,
    fcli: Cli,
    proxy: FaultProxy,
    upstream: RegistryServer,
    judge: Judge,
) -> None:
    proxy.add(Rule("PUT", TAG_PUT, Fault("status", status=500), every=True))
    repo = unique("imp")
    watch = TagWatch(proxy, upstream, repo)

    def run() -> Result:
        return import_(
            fcli, bundle.signed, proxy.ref(f"{repo}:{TAG}"), bundle.keys.public("vendor")
        )

    def complete(res: Result) -> None:
        assert res.json["digest"] == bundle.digest
        registry_complete(judge, upstream, repo, bundle.digest, bundle.graph)
        watch.check(bundle.graph)

    def not_named() -> None:
        not_tagged(judge, upstream, repo)
        # Everything under the name arrived; only the name is missing.
        assert not missing_from(storage_paths(upstream), repo, bundle.graph)

    _, again = Scenario(
        "import: 500 on every write of the tag",
        proxy,
        run,
        complete,
        not_named,
        FAILED,
        {5},
        ("manifest upload", "HTTP 500"),
    ).play()
    assert again is not None
    blobs = again.json["blobs"]
    assert blobs["skipped"] == blobs["total"], blobs  # the re-run sends nothing again


# ===================================================================== 4. registry killed
def test_registry_killed_mid_push_fails_and_a_rerun_on_its_storage_completes(
    app: App,
    fcli: Cli,
    proxies: Callable[[RegistryServer], FaultProxy],
    judge: Judge,
    registry_binary: str,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    """The third blob upload (of four, one at a time) is held at the proxy; while it waits the
    registry gets SIGKILL. bundler must fail (exit 5) with nothing tagged; a registry started
    again over the same storage (a new port, the proxy follows it) takes a re-run that skips
    what had arrived."""
    reg = registry_factory("plain")
    proxy = proxies(reg)
    hold = Rule("PUT", PUT_UPLOAD, Fault("stall", seconds=2.0), nth={3})
    proxy.add(hold)
    repo = unique("killed")
    proc = fcli.popen(
        "copy",
        "--from",
        app.source,
        "--to",
        proxy.ref(f"{repo}:{TAG}"),
        "--parallel",
        "1",
        "-o",
        "json",
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while hold.fired == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert hold.fired == 1, "the held upload never came"
        assert reg.process is not None
        reg.process.kill()  # SIGKILL: no clean shutdown of any kind
        reg.process.wait(timeout=10)
        reg.stop()
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    first = Result(proc.returncode, out, err, argv_of(proc))
    failed_clearly(first, {5}, repo)

    again = start_registry("plain", reg.workdir, binary=registry_binary)  # same storage
    try:
        arrived = storage_blobs(again)
        assert len(arrived & set(app.blobs)) == 2, arrived  # the config and the largest layer
        not_tagged(judge, again, repo)
        proxy.clear()
        proxy.set_upstream(again.host)
        watch = TagWatch(proxy, again, repo)
        res = ok(fcli.copy(app.source, proxy.ref(f"{repo}:{TAG}"), "--parallel", "1"))
        assert res.json["blobs"]["skipped"] >= 2, res.json
        registry_complete(judge, again, repo, app.digest, app_graph(app))
        watch.check(app_graph(app))
    finally:
        again.stop()
    TALLY.injected["registry-sigkill"] += 1
    TALLY.record("registry SIGKILL mid-push (copy)", FAILED)


# ========================================================================== 5. disk full
def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def run_limited(cli: Cli, limit: int, *args: str | os.PathLike[str]) -> Result:
    """The CLI with RLIMIT_FSIZE: a write past ``limit`` bytes fails with EFBIG (Python
    ignores SIGXFSZ), as on a full disk or a quota."""
    proc = cli.popen(*args, stdin=subprocess.DEVNULL, preexec_fn=_file_size_limit(limit))
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Result(proc.returncode, out, err, [str(a) for a in args])


def test_export_onto_a_full_disk_fails_clearly_and_a_rerun_completes(
    bundle: Bundle,
    fcli: Cli,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "demo.tar"
    args = (
        "export",
        f"archive:{bundle.signed}",
        "--to",
        f"archive:{archive}:{BUNDLE_NAME}",
        "-o",
        "json",
    )
    first = run_limited(fcli, 8 * MiB, *args)
    assert first.returncode != 0, first.describe()  # 15 MiB of layers cannot fit in 8 MiB
    assert not archive.exists(), "an archive under its name after a failed write"
    again = ok(fcli(*args))
    assert again.json["digest"] == bundle.digest
    assert archive.read_bytes() == bundle.reference_export.read_bytes()
    verified(fcli, f"archive:{archive}", bundle.keys.public("vendor"))
    TALLY.injected["file-size-limit"] += 1
    name = "export to archive: on a full disk (RLIMIT_FSIZE 8 MiB)"
    try:
        # A full disk is a transport failure (errors.py: "the network or the disk failed"):
        # the one-line error and exit 5, like every other write failure, not an internal error.
        failed_clearly(first, {5}, str(archive))
    except AssertionError:
        TALLY.record(name, UNCLEAR)
        raise
    TALLY.record(name, FAILED)


def test_copy_into_a_layout_on_a_full_disk_fails_clearly_and_a_rerun_completes(
    app: App,
    fcli: Cli,
    tmp_path: Path,
) -> None:
    layout = tmp_path / "layout"
    first = run_limited(
        fcli, 4 * MiB, "copy", "--from", app.source, "--to", f"oci:{layout}:app", "-o", "json"
    )
    failed_clearly(first, {5}, "File too large")
    layout_not_named(layout, "app")
    ok(fcli.copy(app.source, f"oci:{layout}:app"))
    layout_complete(layout, "app", app.digest, app_graph(app))
    TALLY.injected["file-size-limit"] += 1
    TALLY.record("copy to oci: layout on a full disk (RLIMIT_FSIZE 4 MiB)", FAILED)


def test_copy_into_volumes_on_a_full_disk_names_the_write_that_failed(
    app: App,
    fcli: Cli,
    tmp_path: Path,
) -> None:
    """An archive split into volumes cannot rewind a blob cut short, so the blob is not
    retried into it; the error must still say what failed (the write), not only that an
    earlier blob was cut off."""
    out = tmp_path / "vol"
    out.mkdir()
    archive = out / "app.tar"
    args = (
        "copy",
        "--from",
        app.source,
        "--to",
        f"archive:{archive}:app",
        "--max-volume-size",
        "4M",
        "-o",
        "json",
    )
    first = run_limited(fcli, 2 * MiB, *args)
    assert first.returncode != 0, first.describe()
    assert sorted(p.name for p in out.iterdir()) == [], "volumes left after a failed write"
    ok(fcli(*args))
    parts = sorted(p for p in out.iterdir() if re.fullmatch(r"app\.tar\.\d{3}", p.name))
    assert len(parts) >= 4 and (out / "app.tar.parts.json").is_file()
    whole = tmp_path / "whole.tar"
    with whole.open("wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    with tarfile.open(whole) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/sha256/"):
                data = tar.extractfile(member)
                assert data is not None
                assert sha256_digest(data.read()) == "sha256:" + member.name.rsplit("/", 1)[1]
        names = {m.name for m in tar.getmembers()}
    assert {f"blobs/sha256/{_hex(d)}" for d in [app.digest, *app.blobs]} <= names
    TALLY.injected["file-size-limit"] += 1
    name = "copy to archive: volumes on a full disk (RLIMIT_FSIZE 2 MiB)"
    try:
        failed_clearly(first, {5}, "File too large")
    except AssertionError:
        TALLY.record(name, UNCLEAR)
        raise
    TALLY.record(name, FAILED)


# ============================================================================ 6. promote
def promote_args(bundle: Bundle, to: str) -> list[str | os.PathLike[str]]:
    return [
        "promote",
        f"archive:{bundle.approved}",
        "--to",
        to,
        "--policy",
        bundle.policy,
        "--key",
        bundle.keys.private("promoter"),
        "--passphrase-env",
        PASS_VAR,
        "-o",
        "json",
    ]


PIN = re.compile(r"^(?P<host>[^/]+)/(?P<repo>[^@]+?):(?P<tag>[^:@/]+)@(?P<digest>sha256:\w+)$")


def promoted_complete(
    judge: Judge, reg: RegistryServer, prefix: str, doc: dict[str, Any]
) -> list[tuple[str, str, Graph]]:
    """The chart tag names a whole chart; every image it pins resolves, by tag and digest,
    to a whole image. Returns (repository, tag, graph) of every image."""
    chart_repo = f"{prefix}/demo"
    chart_digest = doc["chart"]["digest"]
    assert judge.manifest_digest(reg, chart_repo, TAG) == chart_digest
    chart = registry_graph(judge, reg, chart_repo, chart_digest)
    for blob, size in chart.blobs.items():
        assert judge.blob_size(reg, chart_repo, blob) == size
    images = []
    for relocation in doc["relocations"]:
        match = PIN.match(relocation["target"])
        assert match, relocation
        repo, tag, digest = match.group("repo"), match.group("tag"), match.group("digest")
        assert judge.manifest_digest(reg, repo, tag) == digest, relocation
        graph = registry_graph(judge, reg, repo, digest)
        for blob, size in graph.blobs.items():
            assert judge.blob_size(reg, repo, blob) == size, (repo, blob)
        images.append((repo, tag, graph))
    assert len(images) == 5  # web, api, migrate, worker and the app image
    return images


class Rendezvous:
    """Holds every write of the chart's tag-schema referrers index (``sha256-<hex>``) until
    both promotions have sent theirs, so each has read that index before either writes it:
    the interleaving two promotions started together meet most of the time, made certain.
    Bounded: a write waits at most ``timeout`` seconds."""

    def __init__(self, repo: str, parties: int = 2, timeout: float = 10.0) -> None:
        self.pattern = re.compile(rf"^/v2/{re.escape(repo)}/manifests/sha256-[0-9a-f]{{64}}$")
        self.parties, self.timeout = parties, timeout
        self.writes = 0
        self.cond = threading.Condition()

    def __call__(self, method: str, target: str) -> None:
        if method != "PUT" or not self.pattern.match(target.split("?", 1)[0]):
            return
        with self.cond:
            self.writes += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.writes >= self.parties, timeout=self.timeout)


def test_two_promotions_of_one_bundle_at_once(
    bundle: Bundle,
    fcli: Cli,
    helm: str,
    proxy: FaultProxy,
    upstream: RegistryServer,
    judge: Judge,
    tmp_path: Path,
) -> None:
    prefix = unique("race")
    to = proxy.ref(prefix)
    rendezvous = Rendezvous(f"{prefix}/demo")
    proxy.on_request(rendezvous)
    second = pack_cli(tmp_path / "second-user", helm)
    second.env[PASS_VAR] = PASSPHRASE
    procs = [
        cli.popen(*promote_args(bundle, to), stdin=subprocess.DEVNULL) for cli in (fcli, second)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            results.append(Result(proc.returncode, out, err, argv_of(proc)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    winners = [r for r in results if r.returncode == 0]
    assert winners, "\n".join(r.describe() for r in results)
    for res in results:
        if res.returncode != 0:
            failed_clearly(res, {5, 14})
    docs = [r.json for r in winners]
    assert {d["chart"]["digest"] for d in docs} == {docs[0]["chart"]["digest"]}
    promoted_complete(judge, upstream, prefix, docs[0])
    ok(
        fcli(
            "verify",
            upstream.ref(f"{prefix}/demo:{TAG}"),
            "--promotion",
            "--key",
            bundle.keys.public("promoter"),
        )
    )
    # A re-run is idempotent.
    again = ok(fcli(*promote_args(bundle, to)))
    assert again.json["alreadyPromoted"] is True
    assert again.json["chart"]["digest"] == docs[0]["chart"]["digest"]
    TALLY.injected["concurrent-promotion"] += 1
    # Every promotion that reported a record left it where the chart's referrers are looked
    # up (the tag-schema fallback index on this registry, which has no referrers API).
    chart_hex = _hex(docs[0]["chart"]["digest"])
    index = judge.manifest(upstream, f"{prefix}/demo", f"sha256-{chart_hex}")
    assert index.status_code == 200, index.text
    attached = {m["digest"] for m in index.json()["manifests"]}
    reported = {d["recordDigest"] for d in docs}
    TALLY.records_not_attached += len(reported - attached)
    TALLY.record(
        "two promotions of one bundle at once",
        LOST_RECORD if reported - attached else COMPLETED if len(winners) == 2 else FAILED,
    )
    assert reported <= attached, (
        f"promotion records reported but not attached to the chart: {sorted(reported - attached)}"
    )


def test_promotion_whose_chart_tag_write_fails_leaves_no_chart_and_a_rerun_completes(
    bundle: Bundle,
    fcli: Cli,
    proxy: FaultProxy,
    upstream: RegistryServer,
    judge: Judge,
) -> None:
    prefix = unique("promo")
    chart_repo = f"{prefix}/demo"
    proxy.add(
        Rule(
            "PUT",
            rf"^/v2/{re.escape(chart_repo)}/manifests/1\.0\.0$",
            Fault("status", status=503),
            every=True,
        )
    )
    watch = TagWatch(proxy, upstream, chart_repo)

    def run() -> Result:
        return fcli(*promote_args(bundle, proxy.ref(prefix)))

    def complete(res: Result) -> None:
        images = promoted_complete(judge, upstream, prefix, res.json)
        chart = registry_graph(judge, upstream, chart_repo, res.json["chart"]["digest"])

        def images_in_place(snap: frozenset[str]) -> list[str]:
            missing = []
            for repo, tag, graph in images:
                if not has_tag(snap, repo, tag):
                    missing.append(f"{repo}:{tag}")
                missing += missing_from(snap, repo, graph)
            return missing

        watch.check(chart, images_in_place)

    def not_named() -> None:
        not_tagged(judge, upstream, chart_repo)

    _, again = Scenario(
        "promote: 503 on every write of the chart tag",
        proxy,
        run,
        complete,
        not_named,
        FAILED,
        {5},
        ("manifest upload", "HTTP 503"),
    ).play()
    assert again is not None and again.json["alreadyPromoted"] is False
    repeat = ok(run())
    assert repeat.json["alreadyPromoted"] is True
