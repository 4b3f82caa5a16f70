"""Shared pytest fixtures: real loopback registries, skopeo/umoci/helm, synthetic images.

Registry fixtures are session-scoped (one process per kind, started lazily on
first use, stopped when the test run ends).  Tests that need an empty registry can
use ``registry_factory``.  Harness modules are importable as ``harness``
(``from harness import RegistryServer``).

Everything under ``tests/integration/`` is automatically marked
``integration``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from harness.registry import (  # noqa: E402
    RegistryServer,
    find_registry_binary,
    start_registry,
)
from harness.tokenserver import TokenServer  # noqa: E402

# Hypothesis: the test command is deterministic on every machine (the same examples in the same
# order, no example database, no deadline: a deadline is a time assertion). The long fuzzing
# run (BUNDLER_FUZZ_EXAMPLES=N, tests/unit/test_fuzz_parsers.py) explores with fresh randomness.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, database=None, deadline=None)
settings.load_profile(
    os.environ.get(
        "BUNDLER_HYPOTHESIS_PROFILE",
        "explore" if os.environ.get("BUNDLER_FUZZ_EXAMPLES") else "deterministic",
    )
)

SYNTH_PATH = REPO_ROOT / "examples" / "images" / "synth.py"
INTEGRATION_DIR = TESTS_DIR / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


# ------------------------------------------------------------------ tools
def _which_or_skip(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found on PATH ({hint})")
    return path


_APT_HINT = "run scripts/setup.sh test as root"


@pytest.fixture(scope="session")
def registry_binary() -> str:
    """Path of ``docker-registry`` (CNCF distribution); skips if not installed."""
    exe = find_registry_binary()
    if exe is None:
        pytest.skip(f"docker-registry not found on PATH ({_APT_HINT})")
    return exe


@pytest.fixture(scope="session")
def skopeo() -> str:
    """Path of the ``skopeo`` binary; skips if not installed."""
    return _which_or_skip("skopeo", _APT_HINT)


@pytest.fixture(scope="session")
def umoci() -> str:
    """Path of the ``umoci`` binary; skips if not installed."""
    return _which_or_skip("umoci", _APT_HINT)


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of a Helm v4 binary (``.tools/bin/helm`` or PATH); skips if absent."""
    local = REPO_ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return _which_or_skip("helm", "run scripts/setup.sh test")


@pytest.fixture(scope="session")
def run() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(args, check=True, timeout=120, **kw)`` -> CompletedProcess (text).

    On failure raises ``AssertionError`` carrying the command, stdout and stderr.
    """

    def _run(
        args: Sequence[str | os.PathLike[str]],
        *,
        check: bool = True,
        timeout: float = 120,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"command failed ({proc.returncode}): {' '.join(argv)}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    return _run


# -------------------------------------------------------------- registries
def _session_registry(
    kind: str, binary: str, factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    server = start_registry(kind, factory.mktemp(f"registry-{kind}"), binary=binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def plain_registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """Plain-HTTP registry on 127.0.0.1, no auth (shared by the whole test run)."""
    yield from _session_registry("plain", registry_binary, tmp_path_factory)


@pytest.fixture(scope="session")
def tls_registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """HTTPS registry (test CA in ``.ca_path``) with htpasswd basic auth
    (``.username``/``.password``)."""
    yield from _session_registry("tls", registry_binary, tmp_path_factory)


@pytest.fixture(scope="session")
def token_registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """Plain-HTTP registry with bearer-token auth; ``.token_server`` is the
    in-process :class:`harness.tokenserver.TokenServer`."""
    yield from _session_registry("token", registry_binary, tmp_path_factory)


@pytest.fixture
def token_server(token_registry: RegistryServer) -> TokenServer:
    """The shared token server with its request log cleared for this test."""
    assert token_registry.token_server is not None
    token_registry.token_server.clear()
    return token_registry.token_server


@pytest.fixture
def registry_factory(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., RegistryServer]]:
    """``registry_factory(kind, **kw) -> RegistryServer``: a fresh, empty registry
    for this test only (stopped at teardown)."""
    started: list[RegistryServer] = []

    def _start(kind: str, **kwargs: Any) -> RegistryServer:
        server = start_registry(
            kind, tmp_path_factory.mktemp(f"registry-{kind}"), binary=registry_binary, **kwargs
        )
        started.append(server)
        return server

    yield _start
    for server in reversed(started):
        server.stop()


@pytest.fixture(params=["plain", "tls", "token"])
def any_registry(request: pytest.FixtureRequest) -> RegistryServer:
    """Parametrized over the three shared registries."""
    server: RegistryServer = request.getfixturevalue(f"{request.param}_registry")
    return server


# --------------------------------------------------------------- test data
def load_synth() -> ModuleType:
    """Import ``examples/images/synth.py`` as module ``synth``."""
    cached = sys.modules.get("synth")
    if cached is not None and Path(getattr(cached, "__file__", "")) == SYNTH_PATH:
        return cached
    spec = importlib.util.spec_from_file_location("synth", SYNTH_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["synth"] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def synth() -> ModuleType:
    """The ``examples/images/synth.py`` module (``example_set``, ``bench_set``,
    ``write_image``, ``write_index``, ``LayerSpec``, ...)."""
    return load_synth()


@pytest.fixture(scope="session")
def example_layout(synth: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout holding ``synth.example_set`` (shared: do not modify; copy it
    with ``shutil.copytree`` if a test needs to)."""
    out = tmp_path_factory.mktemp("example-layout") / "layout"
    synth.example_set(out)
    return out


@pytest.fixture
def example_layout_copy(example_layout: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of :func:`example_layout`."""
    dst = tmp_path / "example-layout"
    shutil.copytree(example_layout, dst)
    return dst


COSIGN_VECTORS = TESTS_DIR / "data" / "cosign-vectors"


@pytest.fixture(scope="session")
def cosign_vectors() -> Path:
    """The project's copy of the cosign and containers/image vectors (README in the folder)."""
    return COSIGN_VECTORS


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (large shared fixtures); skips if absent."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data directory {path} not present")
    return path
