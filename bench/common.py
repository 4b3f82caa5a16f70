"""Shared pieces of the benchmarks: the synthetic images, process measurement, hashing limit."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
BUNDLER = [sys.executable, "-m", "bundler.cli.main"]


def load_synth() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "synth", ROOT / "examples" / "images" / "synth.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["synth"] = module
    spec.loader.exec_module(module)
    return module


def start_registry(kind: str, workdir: Path):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "tests"))
    from harness.registry import start_registry as start

    return start(kind, workdir)


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if code != 0:
        raise SystemExit(f"{cmd[:4]} failed ({code}): {err.strip()[:500]}")
    return elapsed, usage.ru_maxrss


def blob_files(layout: Path) -> list[Path]:
    return [p for p in (layout / "blobs" / "sha256").iterdir() if p.is_file()]


def warm(files: list[Path]) -> None:
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass


def hash_limit(files: list[Path], threads: int) -> float:
    """Seconds to sha256 every file once, spread over `threads` threads."""
    groups: list[list[Path]] = [[] for _ in range(threads)]
    for i, f in enumerate(sorted(files, key=lambda p: p.stat().st_size, reverse=True)):
        groups[i % threads].append(f)

    def work(paths: list[Path]) -> None:
        for p in paths:
            with open(p, "rb") as fh:
                hashlib.file_digest(fh, "sha256")

    start = time.perf_counter()
    pool = [threading.Thread(target=work, args=(g,)) for g in groups]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start


def bundler_command(text: str | None) -> list[str]:
    """The command that runs bundler: ``--bundler`` split like a shell line, else ``BUNDLER``.

    E.g. ``.venv/bin/bundler`` (the console script as installed, editable or not) instead of
    ``python -m bundler.cli.main`` from this tree.
    """
    return shlex.split(text) if text else list(BUNDLER)


def machine_facts() -> dict[str, object]:
    """What the numbers depend on: CPU model and count, SHA-NI, the load now, the versions."""
    model, flags = "", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    skopeo = ""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        skopeo = subprocess.run(
            ["skopeo", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "sha_ni": "sha_ni" in flags,
        "python": sys.version.split()[0],
        "skopeo": skopeo,
        "load_1m": os.getloadavg()[0],
    }


def write_report(report: dict[str, object], path: Path | None) -> None:
    """Print ``report`` as JSON, and write it to ``path`` too when one is given (``--json``)."""
    text = json.dumps(report, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")
