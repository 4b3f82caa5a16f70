#!/usr/bin/env python3
"""Deterministic synthetic OCI images in an OCI image layout directory.

Stdlib only.  The layout written is the standard one::

    OUT/oci-layout        {"imageLayoutVersion": "1.0.0"}
    OUT/index.json        one entry per reference, annotated with
                          org.opencontainers.image.ref.name = full reference
    OUT/blobs/sha256/<hex>

Layers are real gzip-compressed tar archives
(``application/vnd.oci.image.layer.v1.tar+gzip``) holding a pseudo-random file
of the requested size plus optional small text files; configs are real OCI
image configs (``rootfs.diff_ids`` = sha256 of the uncompressed tar);
manifests are ``application/vnd.oci.image.manifest.v1+json`` and multi-arch
images are ``application/vnd.oci.image.index.v1+json`` (linux/amd64 +
linux/arm64).

Everything is deterministic: the same arguments produce the same bytes (tar
entries with a fixed mtime and uid/gid 0, a hand-written gzip header with
mtime 0, content from ``random.Random(seed)``).  Compressed bytes depend on
the local zlib build for levels > 0; level 0 ("stored" deflate blocks, the
default for :func:`bench_set`) is identical everywhere.  Two layers with equal
:class:`LayerSpec` are the same blob and are stored once.

Because the index.json entries carry full references, skopeo and other
containers-image tools can address them directly::

    python examples/images/synth.py example OUT
    skopeo inspect oci:OUT:example.local/demo/api:1.0.0
    skopeo copy --all oci:OUT:example.local/demo/web:1.0.0 oci:COPY:web

    python examples/images/synth.py bench OUT --mib 500
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "EXAMPLE_REFS",
    "INDEX_MEDIA_TYPE",
    "LAYER_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "REF_NAME_ANNOTATION",
    "LayerSpec",
    "bench_set",
    "example_set",
    "init_layout",
    "layout_size",
    "read_index",
    "write_image",
    "write_index",
    "write_multiarch",
]

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CREATED_ANNOTATION = "org.opencontainers.image.created"

#: Fixed timestamp used for tar mtimes, config "created" and annotations.
EPOCH = 1700000000  # 2023-11-14T22:13:20Z
CREATED = "2023-11-14T22:13:20Z"

_CHUNK = 1 << 20  # content is generated and written in 1 MiB pieces
_TAR_RECORD = 20 * 512

DEFAULT_PATH = "/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"

Platform = tuple[str, str]  # (os, architecture)
Descriptor = dict[str, Any]


@dataclass(frozen=True)
class LayerSpec:
    """One layer: a file of *size* pseudo-random bytes derived from *seed*.

    ``path`` is the file's path inside the layer (default
    ``opt/synth/<seed>.bin``); ``files`` adds small extra files as
    ``(path, text)`` pairs; ``level`` is the gzip level (0 = stored).
    Equal specs give byte-identical blobs.
    """

    seed: str
    size: int
    path: str | None = None
    files: tuple[tuple[str, str], ...] = ()
    level: int = 6

    @property
    def data_path(self) -> str:
        return (self.path or f"opt/synth/{self.seed}.bin").lstrip("/")


# --------------------------------------------------------------------- layout
def init_layout(layout_dir: Path | str) -> Path:
    """Create ``oci-layout``, ``blobs/sha256`` and an empty ``index.json`` if missing."""
    root = Path(layout_dir)
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = root / "oci-layout"
    if not marker.exists():
        marker.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    if not (root / "index.json").exists():
        _write_index_json(root, [])
    return root


def read_index(layout_dir: Path | str) -> dict[str, Any]:
    """The parsed ``index.json`` of a layout."""
    data: dict[str, Any] = json.loads((Path(layout_dir) / "index.json").read_text())
    return data


def _write_index_json(root: Path, manifests: list[Descriptor]) -> None:
    body = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}
    tmp = root / "index.json.tmp"
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, root / "index.json")


def _tag(root: Path, ref_name: str, desc: Descriptor) -> Descriptor:
    """Add/replace the index.json entry named *ref_name*; returns the entry."""
    entry: Descriptor = {
        "mediaType": desc["mediaType"],
        "digest": desc["digest"],
        "size": desc["size"],
        "annotations": {REF_NAME_ANNOTATION: ref_name},
    }
    manifests = read_index(root).get("manifests", [])
    for i, m in enumerate(manifests):
        if m.get("annotations", {}).get(REF_NAME_ANNOTATION) == ref_name:
            manifests[i] = entry
            break
    else:
        manifests.append(entry)
    _write_index_json(root, manifests)
    return entry


def _blob_path(root: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    return root / "blobs" / algo / hexpart


def _put_bytes(root: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob_path(root, digest)
    if not (path.exists() and path.stat().st_size == len(data)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return digest, len(data)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------- layers
def _random_chunks(seed: str, size: int) -> Iterator[bytes]:
    rng = random.Random(f"synth-layer:{seed}")  # noqa: S311 - test data, not crypto
    left = size
    while left > 0:
        n = min(_CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def _tarinfo(name: str, size: int = 0, *, directory: bool = False, mode: int = 0o644) -> bytes:
    ti = tarfile.TarInfo(name + ("/" if directory and not name.endswith("/") else ""))
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    ti.size = 0 if directory else size
    ti.mode = 0o755 if directory else mode
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _tar_stream(spec: LayerSpec) -> Iterator[bytes]:
    """Yield the uncompressed tar archive for *spec* in pieces."""
    entries: list[tuple[str, int, Iterable[bytes], int]] = []
    for p, text in spec.files:
        data = text.encode()
        mode = 0o755 if text.startswith("#!") else 0o644
        entries.append((p.lstrip("/"), len(data), [data], mode))
    entries.append((spec.data_path, spec.size, _random_chunks(spec.seed, spec.size), 0o644))

    dirs: list[str] = []
    for name, *_ in entries:
        for d in _parents(name):
            if d not in dirs:
                dirs.append(d)
    written = 0
    for d in sorted(dirs):
        hdr = _tarinfo(d, directory=True)
        written += len(hdr)
        yield hdr
    for name, size, chunks, mode in sorted(entries, key=lambda e: e[0]):
        hdr = _tarinfo(name, size, mode=mode)
        written += len(hdr)
        yield hdr
        for c in chunks:
            written += len(c)
            yield c
        pad = -size % 512
        if pad:
            written += pad
            yield b"\0" * pad
    end = b"\0" * 1024
    written += len(end)
    end += b"\0" * (-written % _TAR_RECORD)
    yield end


def _gzip_header(level: int) -> bytes:
    xfl = 2 if level >= 9 else 4 if level == 1 else 0
    # magic, CM=deflate, FLG=0, MTIME=0, XFL, OS=255 (unknown): same on every platform
    return b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([xfl, 255])


def _write_gzip_tar(spec: LayerSpec, out: BinaryIO) -> tuple[str, str, int]:
    """Write the gzip'd tar to *out*; return (digest, diff_id, compressed size)."""
    diff = hashlib.sha256()
    comp = hashlib.sha256()
    size = 0
    crc = 0
    isize = 0
    z = zlib.compressobj(spec.level, zlib.DEFLATED, -15, 9)

    def emit(b: bytes) -> None:
        nonlocal size
        if b:
            comp.update(b)
            out.write(b)
            size += len(b)

    emit(_gzip_header(spec.level))
    for piece in _tar_stream(spec):
        diff.update(piece)
        crc = zlib.crc32(piece, crc)
        isize += len(piece)
        emit(z.compress(piece))
    emit(z.flush())
    emit(struct.pack("<II", crc & 0xFFFFFFFF, isize & 0xFFFFFFFF))
    return "sha256:" + comp.hexdigest(), "sha256:" + diff.hexdigest(), size


# (layout dir, spec) -> (digest, diff_id, size); avoids regenerating shared layers
_LAYER_CACHE: dict[tuple[str, LayerSpec], tuple[str, str, int]] = {}


def write_layer(layout_dir: Path | str, spec: LayerSpec) -> tuple[Descriptor, str]:
    """Write one layer blob (once per layout); return (descriptor, diff_id)."""
    root = init_layout(layout_dir)
    key = (str(root.resolve()), spec)
    cached = _LAYER_CACHE.get(key)
    if cached is not None and _blob_path(root, cached[0]).is_file():
        digest, diff_id, size = cached
    else:
        fd, tmpname = tempfile.mkstemp(prefix=".layer-", dir=root / "blobs" / "sha256")
        try:
            with os.fdopen(fd, "wb", buffering=_CHUNK) as f:
                digest, diff_id, size = _write_gzip_tar(spec, f)
            os.replace(tmpname, _blob_path(root, digest))
        except BaseException:
            Path(tmpname).unlink(missing_ok=True)
            raise
        _LAYER_CACHE[key] = (digest, diff_id, size)
    return {"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size}, diff_id


# --------------------------------------------------------------------- images
def _platform_dict(platform: Platform) -> dict[str, str]:
    os_, arch = platform
    p = {"architecture": arch, "os": os_}
    if arch == "arm64":
        p["variant"] = "v8"
    return p


def write_image(
    layout_dir: Path | str,
    ref_name: str | None,
    layers: Sequence[LayerSpec],
    platform: Platform = ("linux", "amd64"),
    *,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str = "/",
    user: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Descriptor:
    """Write layers, config and manifest of one single-platform image.

    With a *ref_name* the manifest is also listed in ``index.json`` under that
    name (``None`` for children of an index).  Returns the manifest descriptor
    ``{"mediaType", "digest", "size", "platform"}`` (the form an image index
    uses for its children).
    """
    root = init_layout(layout_dir)
    layer_descs: list[Descriptor] = []
    diff_ids: list[str] = []
    history: list[dict[str, Any]] = []
    for spec in layers:
        layer_desc, diff_id = write_layer(root, spec)
        layer_descs.append(layer_desc)
        diff_ids.append(diff_id)
        history.append(
            {"created": CREATED, "created_by": f"synth layer seed={spec.seed} size={spec.size}"}
        )
    envs = {"PATH": DEFAULT_PATH, **(env or {})}
    img_config: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in envs.items()],
        "WorkingDir": workdir,
    }
    if user is not None:
        img_config["User"] = user
    if entrypoint is not None:
        img_config["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        img_config["Cmd"] = list(cmd)
    if labels:
        img_config["Labels"] = dict(labels)
    plat = _platform_dict(platform)
    config: dict[str, Any] = {
        "created": CREATED,
        **plat,
        "config": img_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    cfg_digest, cfg_size = _put_bytes(root, _json_bytes(config))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": cfg_digest, "size": cfg_size},
        "layers": layer_descs,
        "annotations": {CREATED_ANNOTATION: CREATED, **(annotations or {})},
    }
    digest, size = _put_bytes(root, _json_bytes(manifest))
    desc: Descriptor = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size}
    if ref_name is not None:
        _tag(root, ref_name, desc)
    return {**desc, "platform": plat}


def write_index(
    layout_dir: Path | str,
    ref_name: str | None,
    children: Sequence[Descriptor],
    *,
    annotations: Mapping[str, str] | None = None,
) -> Descriptor:
    """Write an image index over *children* (descriptors from :func:`write_image`
    called with ``ref_name=None``); list it in index.json as *ref_name*.

    Returns ``{"mediaType", "digest", "size"}`` of the index.
    """
    root = init_layout(layout_dir)
    for c in children:
        if not _blob_path(root, c["digest"]).is_file():
            raise FileNotFoundError(f"child {c['digest']} is not in {root}")
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {k: c[k] for k in ("mediaType", "digest", "size", "platform") if k in c}
            for c in children
        ],
        "annotations": {CREATED_ANNOTATION: CREATED, **(annotations or {})},
    }
    digest, size = _put_bytes(root, _json_bytes(index))
    desc: Descriptor = {"mediaType": INDEX_MEDIA_TYPE, "digest": digest, "size": size}
    if ref_name is not None:
        _tag(root, ref_name, desc)
    return desc


def write_multiarch(
    layout_dir: Path | str,
    ref_name: str | None,
    per_platform: Mapping[Platform, Sequence[LayerSpec]],
    **image_kwargs: Any,
) -> Descriptor:
    """One image per platform (``{("linux","amd64"): [layers], ...}``) plus an index."""
    children = [
        write_image(layout_dir, None, layers, platform, **image_kwargs)
        for platform, layers in per_platform.items()
    ]
    return write_index(layout_dir, ref_name, children)


def layout_size(layout_dir: Path | str) -> int:
    """Total bytes of all blobs in the layout."""
    return sum(p.stat().st_size for p in (Path(layout_dir) / "blobs").rglob("*") if p.is_file())


# ----------------------------------------------------------------- image sets
AMD64: Platform = ("linux", "amd64")
ARM64: Platform = ("linux", "arm64")
KiB = 1024
MiB = 1024 * 1024

EXAMPLE_REFS = (
    "example.local/demo/web:1.0.0",
    "example.local/demo/api:1.0.0",
    "example.local/demo/worker:1.0.0",
    "example.local/demo/migrate:1.0.0",
)


def _os_release(arch: str) -> tuple[str, str]:
    return (
        "etc/os-release",
        f'NAME="Synth Linux"\nID=synth\nVERSION_ID="1.0"\nARCH={arch}\n',
    )


def example_set(layout_dir: Path | str) -> dict[str, Descriptor]:
    """The project's example images (about 400 KiB of blobs).

    * ``example.local/demo/web:1.0.0`` - index, linux/amd64 + linux/arm64,
      both children share the base layer
    * ``example.local/demo/api:1.0.0`` - own base layer
    * ``example.local/demo/worker:1.0.0`` - shares the base layer with web
    * ``example.local/demo/migrate:1.0.0`` - small init-container image

    Returns ``{reference: descriptor}`` of the index.json entries.
    """
    base = LayerSpec("demo-base", 96 * KiB, "usr/lib/demo/base.bin", files=(_os_release("any"),))
    web_amd64 = LayerSpec(
        "demo-web-amd64",
        48 * KiB,
        "srv/web/web.bin",
        files=(("srv/web/start.sh", "#!/bin/sh\nexec /srv/web/web.bin --port 8080\n"),),
    )
    web_arm64 = LayerSpec(
        "demo-web-arm64",
        48 * KiB,
        "srv/web/web.bin",
        files=(("srv/web/start.sh", "#!/bin/sh\nexec /srv/web/web.bin --port 8080\n"),),
    )
    api_base = LayerSpec(
        "demo-api-base", 64 * KiB, "usr/lib/api/runtime.bin", files=(_os_release("amd64"),)
    )
    api = LayerSpec(
        "demo-api", 40 * KiB, "app/api.bin", files=(("app/config.yaml", "listen: 0.0.0.0:9000\n"),)
    )
    worker = LayerSpec(
        "demo-worker", 32 * KiB, "app/worker.bin", files=(("app/queues.txt", "default\nslow\n"),)
    )
    migrate = LayerSpec(
        "demo-migrate",
        16 * KiB,
        "migrations/data.bin",
        files=(("migrations/run.sh", "#!/bin/sh\necho applying migrations\n"),),
    )
    labels = {"org.opencontainers.image.source": "https://example.local/demo"}

    out: dict[str, Descriptor] = {}
    web, api_ref, worker_ref, migrate_ref = EXAMPLE_REFS
    out[web] = write_multiarch(
        layout_dir,
        web,
        {AMD64: [base, web_amd64], ARM64: [base, web_arm64]},
        entrypoint=["/srv/web/start.sh"],
        env={"PORT": "8080"},
        labels={**labels, "org.opencontainers.image.title": "web"},
    )
    out[api_ref] = write_image(
        layout_dir,
        api_ref,
        [api_base, api],
        AMD64,
        entrypoint=["/app/api.bin"],
        cmd=["--config", "/app/config.yaml"],
        labels={**labels, "org.opencontainers.image.title": "api"},
    )
    out[worker_ref] = write_image(
        layout_dir,
        worker_ref,
        [base, worker],
        AMD64,
        entrypoint=["/app/worker.bin"],
        cmd=["--queues", "default,slow"],
        user="1000:1000",
        labels={**labels, "org.opencontainers.image.title": "worker"},
    )
    out[migrate_ref] = write_image(
        layout_dir,
        migrate_ref,
        [migrate],
        AMD64,
        entrypoint=["/migrations/run.sh"],
        labels={**labels, "org.opencontainers.image.title": "migrate"},
    )
    return {ref: _index_entry(layout_dir, ref) for ref in out}


def _index_entry(layout_dir: Path | str, ref: str) -> Descriptor:
    for m in read_index(layout_dir)["manifests"]:
        if m.get("annotations", {}).get(REF_NAME_ANNOTATION) == ref:
            return dict(m)
    raise KeyError(ref)


def bench_set(
    layout_dir: Path | str, scale_mib: float = 500, *, level: int = 0
) -> dict[str, Descriptor]:
    """Benchmark images totalling about *scale_mib* MiB of blobs.

    Six images under ``example.local/bench/``: ``app-a`` and ``app-b`` are
    multi-arch (amd64+arm64), ``app-c`` .. ``app-f`` single-arch.  All amd64
    images share the ``os`` base layer (12 %), ``app-a``..``app-c`` also the
    ``runtime`` layer (8 %); the arm64 children share an arm64 base (8 %).
    Layer content is incompressible, so *level* defaults to 0 (stored gzip),
    which keeps generation at disk speed.
    """
    total = int(scale_mib * MiB)

    def layer(seed: str, frac: float) -> LayerSpec:
        return LayerSpec(
            f"bench-{seed}", max(1, int(total * frac)), f"opt/{seed}/blob.bin", level=level
        )

    os_base = layer("os-base-amd64", 0.12)
    runtime = layer("runtime-amd64", 0.08)
    arm_base = layer("os-base-arm64", 0.08)
    out: dict[str, Descriptor] = {}
    for name in ("a", "b"):
        ref = f"example.local/bench/app-{name}:1.0.0"
        write_multiarch(
            layout_dir,
            ref,
            {
                AMD64: [os_base, runtime, layer(f"app-{name}-amd64", 0.08)],
                ARM64: [arm_base, layer(f"app-{name}-arm64", 0.08)],
            },
            entrypoint=[f"/opt/app-{name}-amd64/blob.bin"],
        )
        out[ref] = _index_entry(layout_dir, ref)
    for name in ("c", "d", "e", "f"):
        ref = f"example.local/bench/app-{name}:1.0.0"
        layers = [os_base, runtime] if name == "c" else [os_base]
        write_image(
            layout_dir,
            ref,
            [*layers, layer(f"app-{name}", 0.10)],
            AMD64,
            entrypoint=[f"/opt/app-{name}/blob.bin"],
        )
        out[ref] = _index_entry(layout_dir, ref)
    return out


# ------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="synth.py", description="Write deterministic synthetic OCI images to an OCI layout."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_ex = sub.add_parser("example", help="the small example image set (~400 KiB)")
    p_ex.add_argument("out", type=Path, help="OCI layout directory (created if missing)")
    p_b = sub.add_parser("bench", help="benchmark image set of about --mib MiB")
    p_b.add_argument("out", type=Path, help="OCI layout directory (created if missing)")
    p_b.add_argument("--mib", type=float, default=500, help="approximate total MiB (default 500)")
    p_b.add_argument("--level", type=int, default=0, help="gzip level 0-9 (default 0: stored)")
    args = parser.parse_args(argv)

    if args.cmd == "example":
        refs = example_set(args.out)
    else:
        refs = bench_set(args.out, args.mib, level=args.level)
    for ref, desc in refs.items():
        print(f"{ref}\t{desc['digest']}\t{desc['mediaType']}")
    print(f"# {layout_size(args.out)} bytes of blobs in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
