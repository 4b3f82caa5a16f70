"""Property-based fuzzing of every parser that reads untrusted bytes.

Each parser gets arbitrary input and structured mutations of a valid input (flipped, inserted
and deleted bytes; JSON values swapped for random trees; duplicate keys; absurd nesting). The
property is the same everywhere: the parser returns a value or raises a
:class:`bundler.errors.BundlerError`; any other exception (KeyError, TypeError,
RecursionError, UnicodeError, a tarfile or zlib error, ...) is a bug, because the CLI reports
it as an internal error with exit code 1 instead of a refusal.

Sizes are bounded so that no example can run long, and Hypothesis' deadline is off (the first
examples pay for imports and key generation).

A longer run: ``BUNDLER_FUZZ_EXAMPLES=N`` makes every property run N examples instead of its
default (the defaults keep this file near 30 seconds). ``BUNDLER_FUZZ_REPORT=FILE`` writes a
JSON summary when the module finishes: for each parser the examples run, the failures seen and
the slowest example, plus the CPU seconds of the whole module::

    BUNDLER_FUZZ_EXAMPLES=3000 BUNDLER_FUZZ_REPORT=fuzz.json pytest tests/unit/test_fuzz_parsers.py
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import string
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.adapters import crypto
from bundler.adapters.archive import ArchiveReader, scan_tar
from bundler.adapters.bundleconfig import load_bundle_config
from bundler.adapters.chart import (
    load_chart_archive,
    package_files,
    parse_metadata,
    parse_values,
    parse_yaml,
)
from bundler.adapters.dockerarchive import parse_archive_manifest
from bundler.adapters.registry.auth import Authenticator, Challenge, parse_challenge
from bundler.adapters.trustpolicy import load_trust_policy
from bundler.adapters.volumes import PartEntry, PartsList, part_names
from bundler.errors import BundlerError
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    BundleLock,
    LockedChart,
    LockedImage,
    ValuePath,
)
from bundler.model.digest import Digest
from bundler.model.manifest import MAX_MANIFEST_BYTES, load_json_strict, parse_manifest
from bundler.model.reference import Reference
from bundler.model.signature import parse_payload, simple_signing_payload

T = TypeVar("T")

_SCALE = int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "0") or 0)


def fuzz(default: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for one property: ``default`` examples, or BUNDLER_FUZZ_EXAMPLES."""
    return settings(
        max_examples=_SCALE or default,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# ------------------------------------------------------------------ bookkeeping
_STATS: dict[str, dict[str, float]] = {}


def exercise(parser: str, call: Callable[[], T]) -> T | None:
    """Run one example: a value or a BundlerError is fine; anything else is counted and fails
    the test (Hypothesis then shrinks it to a minimal input)."""
    stats = _STATS.setdefault(parser, {"examples": 0, "failures": 0, "slowest_s": 0.0})
    stats["examples"] += 1
    start = time.perf_counter()
    try:
        return call()
    except BundlerError:
        return None
    except Exception:
        stats["failures"] += 1
        raise
    finally:
        stats["slowest_s"] = max(stats["slowest_s"], round(time.perf_counter() - start, 4))


@pytest.fixture(scope="module", autouse=True)
def _fuzz_report() -> Iterator[None]:
    cpu = time.process_time()
    wall = time.perf_counter()
    yield
    target = os.environ.get("BUNDLER_FUZZ_REPORT")
    if target:
        report = {
            "examples_setting": _SCALE or "default",
            "cpu_seconds": round(time.process_time() - cpu, 2),
            "wall_seconds": round(time.perf_counter() - wall, 2),
            "parsers": {name: _STATS[name] for name in sorted(_STATS)},
        }
        Path(target).write_text(json.dumps(report, indent=2) + "\n")


# ------------------------------------------------------------------ strategies
HOSTILE_CHARS = (
    "\x00\n\r\t /\\:@.._-+=%#?&*[]{}'\"`$|<>~!,;"
    "\u0131\u0130\u212a\uff0f\uff1a\u2024\u2215\u200b\u00a0\u0430\u0435\u043e\ufeff\U0001f600"
    "ABCDEFXZ"
)


@st.composite
def mutated(draw: st.DrawFn, raw: bytes, max_ops: int = 6) -> bytes:
    """``raw`` with a few bytes flipped, set, inserted or deleted, or cut short."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from(list(b'\x00\xff"{}[],:\\\n0-9aA.\x80\xc3')))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup" and data:
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_trees = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)


def _encode(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def json_text(draw: st.DrawFn, depth: int = 0) -> str:
    """JSON text that may repeat keys in an object (json.dumps cannot write that)."""
    if depth > 3 or draw(st.integers(0, 3)) == 0:
        return _encode(draw(json_scalars))
    if draw(st.booleans()):
        items = draw(st.lists(json_text(depth + 1), max_size=4))
        return "[" + ",".join(items) + "]"
    keys = draw(
        st.lists(
            st.sampled_from(
                [
                    "a",
                    "mediaType",
                    "digest",
                    "size",
                    "schemaVersion",
                    "critical",
                    "parts",
                    "name",
                    "",
                ]
            ),
            max_size=5,
        )
    )
    return "{" + ",".join(f"{_encode(k)}:{draw(json_text(depth + 1))}" for k in keys) + "}"


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 200_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"a":[', "]}")]))
    inner = draw(st.sampled_from(["1", "null", '""', ""]))
    close = draw(st.booleans())
    return (opener * depth + inner + (closer * depth if close else "")).encode()


@st.composite
def replaced(draw: st.DrawFn, doc: Any) -> bytes:
    """``doc`` with one value somewhere inside it replaced by a random tree, or a key dropped,
    serialised as JSON."""
    doc = json.loads(json.dumps(doc))
    holder: Any = None
    key: Any = None
    node = doc
    while isinstance(node, dict | list) and node and draw(st.integers(0, 3)) != 0:
        holder = node
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        node = node[key]
    if holder is None:
        doc = draw(json_trees)
    elif isinstance(holder, dict) and draw(st.booleans()):
        del holder[key]
    else:
        holder[key] = draw(json_trees)
    return json.dumps(doc, allow_nan=True).encode()


def json_inputs(valid: bytes, doc: Any) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),
        json_text().map(str.encode),
        deep_json(),
        mutated(valid),
        replaced(doc),
    )


# ------------------------------------------------------------------ valid samples
D1 = Digest.of(b"one")
D2 = Digest.of(b"two")
IMAGE_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": str(D1), "size": 3},
        "layers": [
            {
                "mediaType": mt.OCI_LAYER_GZIP
                if hasattr(mt, "OCI_LAYER_GZIP")
                else "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": str(D2),
                "size": 3,
                "annotations": {"a": "b"},
            }
        ],
        "subject": {"mediaType": mt.OCI_MANIFEST, "digest": str(D1), "size": 3},
        "annotations": {"org.opencontainers.image.title": "x"},
    }
).encode()
INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "artifactType": "application/vnd.bundler.bundle.v1+json",
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": str(D1),
                "size": 3,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            }
        ],
    }
).encode()
LOCK = BundleLock(
    name="demo",
    version="1.0.0",
    chart=LockedChart("demo", "1.0.0", "2.0", D1, D2, "directory"),
    images=(
        LockedImage(
            "docker.io/library/nginx:1.25",
            D1,
            mt.OCI_MANIFEST,
            10,
            ("linux/amd64",),
            (ValuePath("image", "string"),),
            ("values",),
        ),
    ),
    rendered=True,
    created=None,
    allowed_missing=("x",),
)
LOCK_BYTES = LOCK.to_bytes()
PAYLOAD = simple_signing_payload(D1, "registry.test/app", {"creator": "me", "timestamp": 1})
PARTS = PartsList(
    "b.tar",
    5 * 1024 * 1024,
    "0" * 64,
    2 * 1024 * 1024,
    tuple(
        PartEntry(name, size, "1" * 64)
        for name, size in zip(
            part_names("b.tar", 3), (2 * 1024 * 1024, 2 * 1024 * 1024, 1024 * 1024), strict=True
        )
    ),
)
PARTS_BYTES = PARTS.encode()
DOCKER_MANIFEST = [
    {
        "Config": "abc.json",
        "RepoTags": ["app:1", "other/app:2"],
        "Layers": ["l1/layer.tar", "l2/layer.tar"],
    }
]
DOCKER_MANIFEST_BYTES = json.dumps(DOCKER_MANIFEST).encode()


def _layout_tar(
    extra: list[tuple[tarfile.TarInfo, bytes]] | None = None, fmt: int = tarfile.PAX_FORMAT
) -> bytes:
    out = io.BytesIO()
    blob = b'{"a":1}'
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(blob)), "size": len(blob)}
            ],
        }
    ).encode()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
            (f"blobs/sha256/{Digest.of(blob).hex}", blob),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra or []:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


LAYOUT_TAR = _layout_tar()

CHART_YAML = (
    b'apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: "2.0"\ntype: application\n'
    b"annotations:\n  helm.sh/images: |\n    - name: web\n      image: nginx:1.25\n"
    b"dependencies:\n  - name: sub\n    version: 0.1.0\n    alias: other\n"
    b"keywords: [a, b]\nmaintainers:\n  - name: x\n    email: y\n"
)
VALUES_YAML = (
    b'image:\n  repository: nginx\n  tag: "1.25"\nlist: &l [1, 2, 3]\nagain: *l\n'
    b"nested: {a: {b: [x, y, {c: d}]}}\nflag: y\n"
)
CHART_TGZ = package_files(
    "demo",
    {"Chart.yaml": CHART_YAML, "values.yaml": VALUES_YAML, "templates/a.yaml": b"kind: Pod\n"},
)


def _tar_of_chart() -> bytes:
    return gzip.decompress(CHART_TGZ)


CHART_TAR = _tar_of_chart()

_KEY = crypto.generate_key("ecdsa-p256")
PUBLIC_PEM = _KEY.public.pem
POLICY_YAML = (
    "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
    "  - name: vendor\n    role: vendor\n    pem: |\n"
    + "".join(f"      {line}\n" for line in PUBLIC_PEM.decode().splitlines())
    + 'bundles:\n  - name: demo\n    versions: ">=1.0.0 <2.0.0"\n    require:\n'
    "      - role: vendor\n        threshold: 1\n"
).encode()
CONFIG_YAML = (
    b"apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata:\n  name: demo\n  version: 1.0.0\n"
    b"  annotations:\n    a: b\nchart:\n  path: chart/demo\nvalues: [v.yaml]\n"
    b"images:\n  - ref: nginx:1.25\n    valuePaths: [image]\nvaluePaths: [image]\n"
    b"platforms: [linux/amd64]\nsources:\n  - oci: ../out/images\n  - dockerArchive: x.tar\n"
    b"  - mirror: {from: docker.io, to: mirror.test}\nupstream: false\nallowMissing: [x]\n"
)


def _weak_encrypted_key() -> bytes:
    """A cosign-format key encrypted with scrypt N=2, so each fuzz example stays cheap."""
    saved = crypto.SCRYPT_N
    crypto.SCRYPT_N = 2
    try:
        return crypto.encrypt_private_key(_KEY, b"pass")
    finally:
        crypto.SCRYPT_N = saved


ENCRYPTED_KEY = _weak_encrypted_key()


def _key_body(pem: bytes) -> dict[str, Any]:
    lines = pem.decode().splitlines()[1:-1]
    doc: dict[str, Any] = json.loads(base64.b64decode("".join(lines)))
    return doc


def _pem(label: str, body: bytes) -> bytes:
    return crypto._pem_encode(label, body)


# ------------------------------------------------------------------ references and digests
reference_text = st.one_of(
    st.text(alphabet=string.ascii_lowercase + string.digits + HOSTILE_CHARS, max_size=80),
    st.text(max_size=40),
    st.builds(
        lambda host, path, sep, tail: f"{host}/{path}{sep}{tail}",
        st.sampled_from(
            ["registry.test", "localhost:5000", "[::1]:5000", "docker.io", "Reg.Test", "127.0.0.1"]
        ),
        st.text(alphabet=string.ascii_lowercase + "/._-" + HOSTILE_CHARS, min_size=1, max_size=30),
        st.sampled_from([":", "@", ":v1@", "@sha256:", ""]),
        st.text(alphabet=string.hexdigits + HOSTILE_CHARS + "sha256:", max_size=80),
    ),
)


@fuzz(400)
@given(reference_text)
def test_reference_parse(text: str) -> None:
    ref = exercise("reference", lambda: Reference.parse(text))
    if ref is not None:
        canonical = str(ref)
        assert canonical.isascii() and canonical.isprintable()
        assert ".." not in ref.repository.split("/")
        assert Reference.parse(canonical) == ref


@fuzz(300)
@given(
    st.one_of(
        st.text(max_size=140),
        st.builds(
            lambda alg, hexpart: f"{alg}:{hexpart}",
            st.sampled_from(["sha256", "sha512", "SHA256", "sha384", "md5", "sha256+b64"]),
            st.text(alphabet=string.hexdigits + HOSTILE_CHARS, min_size=60, max_size=130),
        ),
    )
)
def test_digest_parse(text: str) -> None:
    digest = exercise("digest", lambda: Digest.parse(text))
    if digest is not None:
        assert str(digest) == text
        assert all(c in "0123456789abcdef" for c in digest.hex)


# ------------------------------------------------------------------ JSON documents
@fuzz(500)
@given(
    st.one_of(
        json_inputs(IMAGE_MANIFEST, json.loads(IMAGE_MANIFEST)),
        json_inputs(INDEX, json.loads(INDEX)),
    ),
    st.sampled_from([None, mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, "text/plain"]),
)
def test_parse_manifest(raw: bytes, hint: str | None) -> None:
    manifest = exercise("manifest", lambda: parse_manifest(raw, media_type=hint))
    if manifest is not None:
        assert manifest.raw == raw and manifest.digest == Digest.of(raw)
        assert manifest.media_type in mt.MANIFESTS


@fuzz(200)
@given(json_inputs(IMAGE_MANIFEST, json.loads(IMAGE_MANIFEST)))
def test_load_json_strict(raw: bytes) -> None:
    exercise("load_json_strict", lambda: load_json_strict(raw, "fuzz"))


def test_manifest_size_bound_is_checked_before_parsing() -> None:
    raw = b" " * (MAX_MANIFEST_BYTES + 1)
    assert exercise("manifest", lambda: parse_manifest(raw)) is None


@fuzz(500)
@given(json_inputs(LOCK_BYTES, LOCK.to_json()))
def test_bundle_lock(raw: bytes) -> None:
    lock = exercise("lock", lambda: BundleLock.from_bytes(raw))
    if lock is not None:
        assert isinstance(lock.chart, LockedChart)


def test_valid_lock_round_trips() -> None:
    assert BundleLock.from_bytes(LOCK_BYTES) == LOCK


@fuzz(500)
@given(json_inputs(PAYLOAD, json.loads(PAYLOAD)))
def test_signature_payload(raw: bytes) -> None:
    claim = exercise("payload", lambda: parse_payload(raw))
    if claim is not None:
        assert isinstance(claim.digest, Digest) and isinstance(claim.identity, str)


@fuzz(300)
@given(json_inputs(PARTS_BYTES, PARTS.to_json()))
def test_parts_list(raw: bytes) -> None:
    parts = exercise("parts_list", lambda: PartsList.parse(raw, "fuzz"))
    if parts is not None:
        assert all("/" not in p.name and p.name not in (".", "..") for p in parts.parts)


def test_valid_parts_list_round_trips() -> None:
    assert PartsList.parse(PARTS_BYTES, "fuzz") == PARTS


@fuzz(300)
@given(json_inputs(DOCKER_MANIFEST_BYTES, DOCKER_MANIFEST))
def test_docker_archive_manifest(raw: bytes) -> None:
    exercise("docker_manifest", lambda: parse_archive_manifest(raw, "fuzz"))


# ------------------------------------------------------------------ tar archives
@st.composite
def hostile_members(draw: st.DrawFn) -> list[tuple[tarfile.TarInfo, bytes]]:
    members = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(
            st.one_of(
                st.sampled_from(
                    [
                        "blobs/sha256/" + "a" * 64,
                        "index.json",
                        "oci-layout",
                        "blobs",
                        "../x",
                        "/etc/passwd",
                        "blobs/../../x",
                        "./index.json",
                        "blobs/sha256/../../../x",
                        "a" * 300,
                        "blobs//sha256/x",
                    ]
                ),
                st.text(alphabet="abs/.\\\x00:" + "\u00e9\u2215", min_size=1, max_size=40),
            )
        )
        info = tarfile.TarInfo(name)
        info.type = draw(
            st.sampled_from(
                [
                    tarfile.REGTYPE,
                    tarfile.AREGTYPE,
                    tarfile.DIRTYPE,
                    tarfile.SYMTYPE,
                    tarfile.LNKTYPE,
                    tarfile.CHRTYPE,
                    tarfile.BLKTYPE,
                    tarfile.FIFOTYPE,
                    tarfile.CONTTYPE,
                ]
            )
        )
        info.linkname = draw(st.sampled_from(["", "../x", "/etc/passwd", "index.json"]))
        data = draw(st.binary(max_size=64)) if info.isreg() else b""
        info.size = len(data)
        members.append((info, data))
    return members


def _scan(raw: bytes) -> list[str]:
    return [name for name, _ in scan_tar(io.BytesIO(raw), Path("fuzz.tar"))]


@fuzz(400)
@given(st.one_of(st.binary(max_size=2048), mutated(LAYOUT_TAR, max_ops=8)))
def test_scan_tar(raw: bytes) -> None:
    names = exercise("tar_scan", lambda: _scan(raw))
    for name in names or []:
        assert not name.startswith("/") and ".." not in name.split("/")


_TMP = Path(tempfile.mkdtemp(prefix="fuzz-archive-"))


def _read_archive(raw: bytes) -> list[str]:
    path = _TMP / "a.tar"
    path.write_bytes(raw)
    reader = ArchiveReader(path)
    try:
        reader.read_file("index.json", 4096)
        return reader.blob_names()
    finally:
        reader.close()


@fuzz(300)
@given(
    st.one_of(
        mutated(LAYOUT_TAR, max_ops=8),
        hostile_members().map(_layout_tar),
        st.tuples(hostile_members(), st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])).map(
            lambda pair: _layout_tar(*pair)
        ),
    )
)
def test_archive_reader(raw: bytes) -> None:
    names = exercise("archive_reader", lambda: _read_archive(raw))
    for name in names or []:
        assert name.startswith("blobs/sha") and ".." not in name


# ------------------------------------------------------------------ charts and YAML
def _regzip(tar: bytes) -> bytes:
    return gzip.compress(tar, compresslevel=1, mtime=0)


@fuzz(300)
@given(
    st.one_of(
        mutated(CHART_TGZ),
        mutated(CHART_TAR, max_ops=8).map(_regzip),
        st.tuples(mutated(CHART_YAML), mutated(VALUES_YAML)).map(
            lambda pair: package_files("demo", {"Chart.yaml": pair[0], "values.yaml": pair[1]})
        ),
        hostile_members().map(lambda members: _regzip(_layout_tar(members))),
        st.binary(max_size=512).map(lambda b: b"\x1f\x8b" + b),
    )
)
def test_chart_archive(raw: bytes) -> None:
    exercise("chart_archive", lambda: load_chart_archive(raw, "fuzz"))


yaml_text = st.one_of(
    st.text(
        alphabet=string.ascii_letters[:6] + string.digits[:3] + " \n\t-:[]{}&*!|>'\"#%@,?<=~\\",
        max_size=200,
    ),
    st.text(max_size=60),
)


@fuzz(400)
@given(st.one_of(yaml_text.map(str.encode), mutated(CHART_YAML), st.binary(max_size=200)))
def test_chart_yaml(raw: bytes) -> None:
    metadata = exercise("chart_yaml", lambda: parse_metadata(raw, "fuzz"))
    if metadata is not None:
        exercise("chart_yaml", metadata.config_json)


@fuzz(300)
@given(st.one_of(yaml_text.map(str.encode), mutated(VALUES_YAML), st.binary(max_size=200)))
def test_values_yaml(raw: bytes) -> None:
    exercise("values_yaml", lambda: parse_values(raw, "fuzz"))
    exercise("values_yaml", lambda: parse_yaml(raw, "fuzz"))


def _load_file(loader: Callable[[Path], Any], name: str, raw: bytes) -> Any:
    path = _TMP / name
    path.write_bytes(raw)
    return loader(path)


@fuzz(250)
@given(st.one_of(mutated(POLICY_YAML), yaml_text.map(str.encode)))
def test_trust_policy(raw: bytes) -> None:
    exercise("trust_policy", lambda: _load_file(load_trust_policy, "policy.yaml", raw))


@fuzz(250)
@given(st.one_of(mutated(CONFIG_YAML), yaml_text.map(str.encode)))
def test_bundle_config(raw: bytes) -> None:
    exercise("bundle_config", lambda: _load_file(load_bundle_config, "bundle.yaml", raw))


def test_valid_samples_load() -> None:
    """The seeds of the mutations are themselves valid, so mutations start from real inputs."""
    assert load_chart_archive(CHART_TGZ, "fuzz").metadata.name == "demo"
    assert _load_file(load_trust_policy, "policy.yaml", POLICY_YAML).keys
    assert _load_file(load_bundle_config, "bundle.yaml", CONFIG_YAML).name == "demo"
    assert parse_manifest(IMAGE_MANIFEST).layers and parse_manifest(INDEX).manifests
    assert parse_payload(PAYLOAD).digest == D1
    assert _read_archive(LAYOUT_TAR)
    assert parse_archive_manifest(DOCKER_MANIFEST_BYTES, "fuzz")
    assert crypto.decrypt_private_key(ENCRYPTED_KEY, b"pass", "fuzz").public == _KEY.public


# ------------------------------------------------------------------ keys
@fuzz(300)
@given(
    st.one_of(
        mutated(ENCRYPTED_KEY),
        replaced(_key_body(ENCRYPTED_KEY)).map(
            lambda body: _pem(crypto.COSIGN_PRIVATE_KEY_LABEL, body)
        ),
        json_text().map(lambda t: _pem(crypto.SIGSTORE_PRIVATE_KEY_LABEL, t.encode())),
        st.binary(max_size=300),
    ),
    st.sampled_from([b"pass", b"", b"wrong"]),
)
def test_private_key(raw: bytes, passphrase: bytes) -> None:
    # A hostile N is refused before scrypt runs (see test_crypto); keep fuzzed N small anyway.
    exercise("private_key", lambda: crypto.decrypt_private_key(raw, passphrase, "fuzz"))


@fuzz(300)
@given(
    st.one_of(
        mutated(PUBLIC_PEM),
        st.binary(max_size=300),
        st.binary(min_size=1, max_size=200).map(lambda b: _pem("PUBLIC KEY", b)),
    )
)
def test_public_key(raw: bytes) -> None:
    exercise("public_key", lambda: crypto.load_public_key(raw, "fuzz"))


# ------------------------------------------------------------------ registry auth
@fuzz(400)
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda scheme, params: f"{scheme} " + ",".join(params),
            st.sampled_from(["Bearer", "Basic", "bearer", "Digest", ""]),
            st.lists(
                st.builds(
                    lambda k, v, q: f"{k}={q}{v}{q}",
                    st.sampled_from(["realm", "service", "scope", "REALM", "x"]),
                    st.text(alphabet=string.printable + "\u00e9", max_size=30),
                    st.sampled_from(['"', ""]),
                ),
                max_size=5,
            ),
        ),
    )
)
def test_parse_challenge(header: str) -> None:
    challenge = exercise("challenge", lambda: parse_challenge(header))
    if challenge is not None:
        assert challenge.scheme == challenge.scheme.lower()
        assert all(isinstance(v, str) for v in challenge.params.values())


class _NoNetwork(requests.Session):
    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        raise requests.ConnectionError("no network in the fuzzer")


@fuzz(300)
@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda scheme, host: f"{scheme}://{host}/token",
            st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
            st.text(alphabet=string.ascii_letters + string.digits + "[]:.@%/\\\x00-", max_size=30),
        ),
    ),
    st.booleans(),
)
def test_token_realm(realm: str, plain_http: bool) -> None:
    auth = Authenticator("registry.test", None, (0.1, 0.1))
    del plain_http  # --plain-http no longer changes which realms are accepted
    auth.challenge = Challenge("bearer", {"realm": realm, "service": "s"})
    # The session never connects: a realm the client accepts ends in a TransportError.
    exercise("token_realm", lambda: auth._fetch_token(("repository:a:pull",), _NoNetwork()))
