#!/usr/bin/env python3
"""Benchmark: signing a bundle archive against hashing its bytes once with SHA-256.

Run by hand (never in CI): ``.venv/bin/python bench/sign_bench.py --mib 1536 --runs 5``.

A bundle of the synthetic image set (``--mib`` MiB of blobs) is packed into an archive once.
Each run then, in this order: hashes the whole archive file once with ``hashlib.sha256`` on
one thread (page cache warm, the same bytes sign would have to read to rewrite them), and
signs it in-process with a new key (``bundler.services.sign``: every manifest the bundle pins,
as ``bundler sign`` does). Each sign appends to the archive, so run N signs an archive that
already carries N-1 signatures, as an approval does. The ratio is sign time over hash time,
both from the same run. The bytes the archive grew by, and the bytes the process read and wrote
during the sign (``/proc/self/io``), are reported beside the times. One ``bundler sign``
command run (interpreter start-up included) is timed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BUNDLER, load_synth, run_measured, write_report
from pack_bench import write_chart

from bundler.adapters.crypto import generate_key
from bundler.services.sign import sign
from bundler.services.transports import Transports, parse_location

synth = load_synth()
PASS_ENV = "BUNDLER_BENCH_PASSPHRASE"


def hash_file_once(path: Path) -> float:
    start = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return time.perf_counter() - start


def io_counters() -> tuple[int, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["wchar"])


def cpu_facts() -> dict[str, object]:
    model, flags = "", ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1]
    return {
        "model": model,
        "sha_ni": "sha_ni" in flags.split(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def pack_archive(work: Path, mib: int, env: dict[str, str]) -> Path:
    layout = work / "bench"
    refs = list(synth.bench_set(layout, mib))
    write_chart(work / "chart", refs)
    archive = work / "bench.tar"
    subprocess.run(
        [
            *BUNDLER,
            "pack",
            "--chart",
            str(work / "chart"),
            "--name",
            "bench",
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
    shutil.rmtree(layout)
    return archive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1536)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bundler-sign-bench-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"), **{PASS_ENV: "bench"})
    try:
        archive = pack_archive(work, args.mib, env)
        location = parse_location(f"archive:{archive}")
        transports = Transports(use_blob_cache=False)
        hashes, signs, grew, read, written = [], [], [], [], []
        signed = 0
        for _ in range(args.runs):
            hashes.append(hash_file_once(archive))
            key = generate_key("ecdsa-p256")
            size = archive.stat().st_size
            r0, w0 = io_counters()
            start = time.perf_counter()
            result = sign(location, key, transports)
            signs.append(time.perf_counter() - start)
            r1, w1 = io_counters()
            signed = len(result.signed)
            grew.append(archive.stat().st_size - size)
            read.append(r1 - r0)
            written.append(w1 - w0)
        subprocess.run(
            [*BUNDLER, "keys", "generate", str(work / "k"), "--passphrase-env", PASS_ENV],
            check=True,
            env=env,
            capture_output=True,
        )
        command, _ = run_measured(
            [
                *BUNDLER,
                "sign",
                f"archive:{archive}",
                "--key",
                str(work / "k.key"),
                "--passphrase-env",
                PASS_ENV,
            ],
            env,
        )
        h, s = statistics.median(hashes), statistics.median(signs)
        report = {
            "cpu": cpu_facts(),
            "runs": args.runs,
            "archive_mib": round(archive.stat().st_size / 2**20, 1),
            "manifests_signed_per_run": signed,
            "seconds": {
                "sha256_once": [round(x, 4) for x in hashes],
                "sign_in_process": [round(x, 4) for x in signs],
                "sign_command_once": round(command, 3),
            },
            "median_sha256_once": round(h, 4),
            "median_sign": round(s, 4),
            "ratio_sign_vs_sha256": round(s / h, 4),
            "archive_grew_bytes": grew,
            "process_read_bytes_during_sign": read,
            "process_wrote_bytes_during_sign": written,
        }
        write_report(report, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
