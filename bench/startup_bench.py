#!/usr/bin/env python3
"""Benchmark: start-up. ``bundler version``, ``bundler --help`` and a no-op ``bundler copy``.

Run by hand (never in CI)::

    .venv/bin/python bench/startup_bench.py --runs 40 \\
        --bundler editable=.venv/bin/bundler --bundler wheel=/tmp/venv/bin/bundler

Each ``--bundler LABEL=COMMAND`` is one way of running bundler (default: ``python -m
bundler.cli.main`` from this tree): the console script of an editable install, of a wheel
installed into another venv, or of another revision (``env PYTHONPATH=DIR .venv/bin/bundler``).
For each, and in the same rounds: the bare interpreter the command runs on (``python -c pass``),
``version``, ``--help``, and a no-op copy of one multi-arch image from an OCI layout into a
loopback registry that already holds all of it, next to ``skopeo copy`` doing the same no-op.
The commands take turns, round after round, so the machine's noise falls on all of them alike.
Reported: median and minimum wall time, the no-op copy as a ratio to skopeo's, the modules
each command imports (``PYTHONPROFILEIMPORTTIME``), and the machine's facts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BUNDLER, load_synth, machine_facts, start_registry, write_report

synth = load_synth()
REF = "example.local/bench/app-a:1.0.0"  # an index: amd64 and arm64 images


def interpreter_of(command: list[str]) -> str:
    """The Python a bundler command runs on: the command's own, or its script's shebang."""
    for word in command:
        if os.path.basename(word).startswith("python"):
            return word
    script = shutil.which(command[-1]) or command[-1]
    with open(script, "rb") as fh:
        first = fh.readline().decode().strip()
    return first.removeprefix("#!").split()[0] if first.startswith("#!") else sys.executable


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr[-400:]!r}")
    return elapsed


def modules_imported(cmd: list[str]) -> int:
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("import time:")) - 1


def parse_bundlers(values: list[str]) -> dict[str, list[str]]:
    if not values:
        return {"python -m bundler.cli.main": list(BUNDLER)}
    out: dict[str, list[str]] = {}
    for value in values:
        label, sep, command = value.partition("=")
        if not sep or not label or not command:
            raise SystemExit(f"--bundler {value!r}: expected LABEL=COMMAND")
        out[label] = shlex.split(command)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--bundler", action="append", default=[], metavar="LABEL=COMMAND")
    parser.add_argument("--json", type=Path, help="write raw results here")
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed")
    bundlers = parse_bundlers(args.bundler)
    machine = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="bundler-startup-"))
    reg = None
    try:
        layout = work / "layout"
        synth.bench_set(layout, 20)
        reg = start_registry("plain", work / "registry")
        source = f"oci:{layout}:{REF}"
        skopeo_noop = [
            "skopeo",
            "copy",
            "-q",
            "--all",
            "--dest-tls-verify=false",
            source,
            f"docker://{reg.host}/skopeo/app-a:1.0.0",
        ]
        cases: dict[str, list[str]] = {}
        for label, command in bundlers.items():
            cases[f"{label}: python -c pass"] = [interpreter_of(command), "-c", "pass"]
            cases[f"{label}: version"] = [*command, "version"]
            cases[f"{label}: --help"] = [*command, "--help"]
            noop = [*command, "copy", "-q", "--from", source]
            cases[f"{label}: no-op copy"] = [*noop, "--to", f"{reg.host}/{label}/app-a:1.0.0"]
        cases["skopeo: no-op copy"] = skopeo_noop
        cases["skopeo: --version"] = ["skopeo", "--version"]
        for cmd in cases.values():  # the first copies fill the registry; every case warms up
            wall(cmd)
            wall(cmd)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, cmd in cases.items():
                times[name].append(wall(cmd))
        imports = {
            name: modules_imported(cmd)
            for name, cmd in cases.items()
            if not name.startswith("skopeo") and "python -c" not in name
        }
        med = {name: statistics.median(v) for name, v in times.items()}
        report = {
            "machine": {**machine, "load_1m_end": os.getloadavg()[0]},
            "runs": args.runs,
            "commands": {label: command for label, command in bundlers.items()},
            "median_ms": {name: round(v * 1000, 1) for name, v in med.items()},
            "min_ms": {name: round(min(v) * 1000, 1) for name, v in times.items()},
            "noop_copy_vs_skopeo": {
                label: round(med[f"{label}: no-op copy"] / med["skopeo: no-op copy"], 2)
                for label in bundlers
            },
            "modules_imported": imports,
        }
        write_report(report, args.json)
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
