"""An interrupted ``bundler import`` leaves nothing tagged, and a re-run finishes the job.

The bundle carries a ``big`` image of three 30 MiB layers, so an import takes long enough to be
interrupted after some blobs have arrived: once by SIGKILL of bundler itself, once by stopping
the registry under it (then starting a registry again over the same storage). Arrival is judged
from the registry's storage directory, names from its tag list and skopeo, and the re-run must
skip what is already there and end with a bundle that verifies.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from copy_support import Cli, Judge, Result
from harness.registry import RegistryServer, start_registry
from pack_support import pack_cli
from transfer_support import (
    BIG_REF,
    Keys,
    archive_graph,
    env_with_passphrase,
    import_,
    make_keys,
    ok,
    pack,
    sign,
    storage_blobs,
    verified,
)

MiB = 1024 * 1024
BIG_LAYERS = 3
BIG_LAYER_BYTES = 30 * MiB
REPO = "internal/demo"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("resume-keys"), "vendor")


@pytest.fixture(scope="module")
def rcli(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return env_with_passphrase(pack_cli(tmp_path_factory.mktemp("resume") / "user", helm))


@dataclass(frozen=True)
class BigBundle:
    archive: Path
    digest: str
    big_layers: frozenset[str]


@pytest.fixture(scope="module")
def big_bundle(
    rcli: Cli,
    keys: Keys,
    synth: ModuleType,
    example_layout: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> BigBundle:
    """The example bundle plus ``big`` (three stored 30 MiB layers), signed, in an archive."""
    home = tmp_path_factory.mktemp("big-bundle")
    layout = home / "layout"
    shutil.copytree(example_layout, layout)
    synth.write_image(
        layout,
        BIG_REF,
        [synth.LayerSpec(f"resume-big-{i}", BIG_LAYER_BYTES, level=0) for i in range(BIG_LAYERS)],
    )
    archive = home / "demo-big.tar"
    digest = pack(rcli, layout, f"archive:{archive}", "--image", BIG_REF)
    sign(rcli, f"archive:{archive}", keys.private("vendor"))
    big = frozenset(
        d for d, size in archive_graph(archive, digest).blobs.items() if size > BIG_LAYER_BYTES
    )
    assert len(big) == BIG_LAYERS
    return BigBundle(archive, digest, big)


def start_import(cli: Cli, bundle: BigBundle, to: str, keys: Keys) -> subprocess.Popen[str]:
    """``bundler import`` in the background, one blob at a time (biggest first)."""
    return cli.popen(
        "import",
        f"archive:{bundle.archive}",
        "--to",
        to,
        "--key",
        keys.public("vendor"),
        "--parallel",
        "1",
        "-o",
        "json",
        stdin=subprocess.DEVNULL,
    )


def wait_for_arrival(
    proc: subprocess.Popen[str], reg: RegistryServer, wanted: frozenset[str], timeout: float = 60
) -> set[str]:
    """Poll the registry's storage until one of ``wanted`` has arrived; what has arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrived = storage_blobs(reg)
        if arrived & wanted:
            return arrived
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"import ended ({proc.returncode}) before a big blob arrived"
                f"\n--- stdout\n{out}\n--- stderr\n{err}"
            )
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    raise AssertionError(f"no big blob arrived in {reg.storage_dir} within {timeout}s")


def assert_not_tagged(judge: Judge, reg: RegistryServer, tag: str) -> None:
    assert tag not in judge.tags(reg, REPO)
    with pytest.raises(AssertionError, match="skopeo failed"):
        judge.raw(reg.docker_ref(f"{REPO}:{tag}"), reg)


def rerun(
    cli: Cli, bundle: BigBundle, reg: RegistryServer, keys: Keys, arrived: set[str]
) -> Result:
    res = ok(import_(cli, bundle.archive, reg.ref(f"{REPO}:1.0.0"), keys.public("vendor")))
    blobs = res.json["blobs"]
    assert res.json["digest"] == bundle.digest
    assert blobs["skipped"] > 0
    assert blobs["skipped"] >= len(arrived)  # everything that had arrived is not sent again
    assert blobs["copied"] + blobs["skipped"] + blobs["mounted"] == blobs["total"]
    return res


def test_killed_import_tags_nothing_and_a_rerun_skips_what_arrived(
    rcli: Cli,
    keys: Keys,
    big_bundle: BigBundle,
    judge: Judge,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    reg = registry_factory("plain")
    proc = start_import(rcli, big_bundle, reg.ref(f"{REPO}:1.0.0"), keys)
    arrived = wait_for_arrival(proc, reg, big_bundle.big_layers)
    proc.kill()  # SIGKILL: no clean-up of any kind
    proc.communicate(timeout=30)
    assert proc.returncode == -9, "import finished before it could be interrupted"
    assert not big_bundle.big_layers <= arrived
    assert_not_tagged(judge, reg, "1.0.0")

    rerun(rcli, big_bundle, reg, keys, arrived)
    assert judge.raw_digest(reg.docker_ref(f"{REPO}:1.0.0"), reg) == big_bundle.digest
    assert big_bundle.big_layers <= storage_blobs(reg)
    out = verified(rcli, reg.ref(f"{REPO}:1.0.0"), keys.public("vendor"))
    assert out.startswith(big_bundle.digest)


def test_registry_stopped_midway_fails_the_import_and_a_rerun_completes(
    rcli: Cli,
    keys: Keys,
    big_bundle: BigBundle,
    judge: Judge,
    registry_binary: str,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    reg = registry_factory("plain")
    proc = start_import(rcli, big_bundle, reg.ref(f"{REPO}:1.0.0"), keys)
    arrived = wait_for_arrival(proc, reg, big_bundle.big_layers)
    reg.stop()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 5, f"exit {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert err.splitlines()[-1].startswith("error: "), err

    again = start_registry("plain", reg.workdir, binary=registry_binary)  # same storage
    try:
        assert storage_blobs(again) >= arrived
        assert_not_tagged(judge, again, "1.0.0")
        rerun(rcli, big_bundle, again, keys, arrived)
        assert judge.raw_digest(again.docker_ref(f"{REPO}:1.0.0"), again) == big_bundle.digest
        out = verified(rcli, again.ref(f"{REPO}:1.0.0"), keys.public("vendor"))
        assert out.startswith(big_bundle.digest)
    finally:
        again.stop()


# -- export ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vendor_registry(
    rcli: Cli,
    keys: Keys,
    big_bundle: BigBundle,
    registry_binary: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> RegistryServer:
    """A registry holding the big bundle (imported once), to export from."""
    reg = start_registry("plain", tmp_path_factory.mktemp("export-source"), binary=registry_binary)
    ok(import_(rcli, big_bundle.archive, reg.ref(f"{REPO}:1.0.0"), keys.public("vendor")))
    return reg


def _wait_for_partial(proc: subprocess.Popen[str], partial: Path, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if partial.exists() and partial.stat().st_size >= at_least:
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"export ended ({proc.returncode}) early\n{out}\n{err}")
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    raise AssertionError(f"{partial} never grew to {at_least} bytes")


def _export(cli: Cli, source: str, archive: Path) -> Result:
    # Named explicitly: the name would otherwise follow the source's registry port, and a
    # re-run against another name is another archive (it starts over, by design).
    return ok(
        cli(
            "export",
            source,
            "--to",
            f"archive:{archive}:demo:1.0.0",
            "--parallel",
            "1",
            "-o",
            "json",
        )
    )


def test_killed_export_resumes_and_ends_byte_identical(
    rcli: Cli,
    big_bundle: BigBundle,
    vendor_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    source = vendor_registry.ref(f"{REPO}:1.0.0")
    whole = tmp_path / "whole.tar"
    _export(rcli, source, whole)
    archive = tmp_path / "out" / "demo.tar"
    archive.parent.mkdir()
    partial = archive.parent / f".{archive.name}.partial"
    proc = rcli.popen(
        "export",
        source,
        "--to",
        f"archive:{archive}:demo:1.0.0",
        "--parallel",
        "1",
        stdin=subprocess.DEVNULL,
    )
    _wait_for_partial(proc, partial, BIG_LAYER_BYTES + 1024 * 1024)
    proc.kill()
    proc.communicate()
    assert not archive.exists()  # nothing under the archive's name until it is complete
    assert partial.exists()
    again = _export(rcli, source, archive)
    assert again.json["blobs"]["skipped"] >= 1  # what the killed run wrote is kept
    assert not partial.exists()
    assert archive.read_bytes() == whole.read_bytes()


def test_export_with_its_registry_stopped_midway_resumes(
    rcli: Cli,
    big_bundle: BigBundle,
    registry_binary: str,
    keys: Keys,
    tmp_path: Path,
) -> None:
    reg = start_registry("plain", tmp_path / "registry", binary=registry_binary)
    try:
        ok(import_(rcli, big_bundle.archive, reg.ref(f"{REPO}:1.0.0"), keys.public("vendor")))
        archive = tmp_path / "demo.tar"
        partial = tmp_path / f".{archive.name}.partial"
        proc = rcli.popen(
            "export",
            reg.ref(f"{REPO}:1.0.0"),
            "--to",
            f"archive:{archive}:demo:1.0.0",
            "--parallel",
            "1",
            stdin=subprocess.DEVNULL,
        )
        _wait_for_partial(proc, partial, BIG_LAYER_BYTES + 1024 * 1024)
        reg.stop()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 5, err
        assert not archive.exists() and partial.exists()
    finally:
        reg.stop()
    again = start_registry("plain", tmp_path / "registry", binary=registry_binary)
    try:
        result = _export(rcli, again.ref(f"{REPO}:1.0.0"), archive)
        assert result.json["blobs"]["skipped"] >= 1
        assert result.json["digest"] == big_bundle.digest
        assert verified(rcli, f"archive:{archive}", keys.public("vendor")).startswith(
            big_bundle.digest
        )
    finally:
        again.stop()
