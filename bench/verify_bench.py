#!/usr/bin/env python3
"""Benchmark: verifying a signed bundle archive against hashing its bytes once.

Run by hand (never in CI): ``.venv/bin/python bench/verify_bench.py --mib 500 --runs 5``.

Two signed archives are verified, offline, in place: the example bundle (examples/chart/demo and
its four images) and a bundle of the synthetic 500 MiB image set. For each, the time of
`bundler verify` (in-process, and as a command with interpreter start-up) is compared with the
time to SHA-256 every blob in the archive once, on one thread, reading the same file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BUNDLER, ROOT, load_synth, run_measured, write_report
from pack_bench import write_chart

from bundler.adapters.archive import ArchiveReader
from bundler.adapters.crypto import load_public_key
from bundler.adapters.layout import LayoutSource
from bundler.model.policy import single_key_policy
from bundler.services.verify import verify

synth = load_synth()
PASS_ENV = "BUNDLER_BENCH_PASSPHRASE"


def hash_archive_once(path: Path) -> float:
    reader = ArchiveReader(path)
    names = reader.blob_names()
    start = time.perf_counter()
    for name in names:
        member = reader._members[name]
        digest = hashlib.sha256()
        offset, left = member.offset, member.size
        while left:
            chunk = os.pread(reader._fd, min(1 << 20, left), offset)
            digest.update(chunk)
            offset += len(chunk)
            left -= len(chunk)
    elapsed = time.perf_counter() - start
    reader.close()
    return elapsed


def verify_in_process(path: Path, public: Path) -> float:
    policy = single_key_policy(load_public_key(public.read_bytes(), str(public)))
    start = time.perf_counter()
    source = LayoutSource(ArchiveReader(path), None)
    report = verify(source, policy)
    source.close()
    elapsed = time.perf_counter() - start
    if report.bundle is None:
        raise SystemExit(f"verification failed: {report.error}")
    return elapsed


def bundle(work: Path, name: str, chart: Path, layout: Path, env: dict[str, str]) -> Path:
    archive = work / f"{name}.tar"
    subprocess.run(
        [
            *BUNDLER,
            "pack",
            "--chart",
            str(chart),
            "--name",
            name,
            "--source",
            f"oci:{layout}",
            "--no-upstream",
            "--no-render",
            "--to",
            f"archive:{archive}",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    subprocess.run(
        [
            *BUNDLER,
            "sign",
            f"archive:{archive}",
            "--key",
            str(work / "k.key"),
            "--passphrase-env",
            PASS_ENV,
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    return archive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bundler-verify-bench-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"), **{PASS_ENV: "bench"})
    try:
        subprocess.run(
            [*BUNDLER, "keys", "generate", str(work / "k"), "--passphrase-env", PASS_ENV],
            check=True,
            env=env,
            capture_output=True,
        )
        example_layout = work / "example"
        synth.example_set(example_layout)
        archives = {
            "example": bundle(work, "demo", ROOT / "examples/chart/demo", example_layout, env)
        }
        bench_layout = work / "bench"
        refs = list(synth.bench_set(bench_layout, args.mib))
        write_chart(work / "chart", refs)
        archives["synthetic"] = bundle(work, "bench", work / "chart", bench_layout, env)
        shutil.rmtree(bench_layout)
        report: dict[str, object] = {"runs": args.runs}
        for label, archive in archives.items():
            hashes, inproc, cli = [], [], []
            for _ in range(args.runs):
                hashes.append(hash_archive_once(archive))
                inproc.append(verify_in_process(archive, work / "k.pub"))
                cli.append(
                    run_measured(
                        [*BUNDLER, "verify", f"archive:{archive}", "--key", str(work / "k.pub")],
                        env,
                    )[0]
                )
            h, v, c = (statistics.median(x) for x in (hashes, inproc, cli))
            report[label] = {
                "archive_mib": round(archive.stat().st_size / 2**20, 2),
                "seconds_median": {
                    "hash_once": round(h, 4),
                    "verify_in_process": round(v, 4),
                    "verify_command": round(c, 4),
                },
                "ratio_verify_vs_hash": round(v / h, 2),
                "ratio_command_vs_hash": round(c / h, 2),
            }
        write_report(report, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
