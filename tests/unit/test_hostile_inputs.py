"""Hostile inputs not covered elsewhere: each is refused cheaply, with a BundlerError of its own
family, without inflating or expanding what the attacker made cheap to send.

"Cheaply" is proven without a clock: the ``bounded`` fixture traces every Python allocation and
fails a refusal whose peak passes :data:`MEMORY_BOUND` (an alias bomb, an inflated member or a
claimed 4 GiB header would take gigabytes), and the nesting tests show the refusal comes from
the depth bound (the error names it) rather than from Python's recursion limit.

Covered in other files (not repeated here): archive members with ``..``, absolute paths,
symlinks, hardlinks, devices and duplicates (test_archive_safety, test_chart), manifests over
4 MiB and registries serving other bytes for a digest (test_digest_manifest,
test_client_retries), duplicate JSON keys, Basic credentials on a redirect (test_auth).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import subprocess
import sys
import tarfile
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_registry import FakeRegistry, digest_of, make_client

from bundler.adapters import chart as chart_mod
from bundler.adapters.archive import MAX_EXTENDED_HEADER_BYTES, ArchiveReader, scan_tar
from bundler.adapters.bundleconfig import load_bundle_config
from bundler.adapters.chart import load_chart_archive, package_files, parse_values
from bundler.adapters.dockerarchive import parse_archive_manifest
from bundler.adapters.registry.credentials import Credential
from bundler.adapters.trustpolicy import load_trust_policy
from bundler.adapters.volumes import PartsList
from bundler.adapters.yamlbounds import MAX_ALIAS_NODES, MAX_DEPTH
from bundler.errors import (
    AuthError,
    ChartError,
    ConfigError,
    KeyFileError,
    ManifestError,
    ReferenceFormatError,
    UnsafeArchiveError,
)
from bundler.model import mediatypes as mt
from bundler.model.bundle import BundleLock
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import MAX_DESCRIPTORS, parse_manifest
from bundler.model.reference import Reference
from bundler.model.signature import parse_payload
from bundler.services.rendered import scan

# Every refusal here allocates a few MiB at most (the hostile text itself, a parser's state);
# what the attacker hoped to make us build is hundreds of MiB to many GiB.
MEMORY_BOUND = 64 * 1024 * 1024
CHART_YAML = "apiVersion: v2\nname: demo\nversion: 1.0.0\n"


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": ``levels`` anchors, each a list of ``width`` aliases of the one
    before, so the last stands for width**levels strings in a few hundred bytes."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 30) -> str:
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}")
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "deep: " + "[" * depth + "]" * depth + "\n"


@pytest.fixture
def bounded() -> Iterator[None]:
    """Fail the test if the code under it allocates more than MEMORY_BOUND at its peak."""
    with memory_peak() as peak:
        yield
    assert peak[0] < MEMORY_BOUND, f"peak {peak[0]} bytes of Python allocations"


@contextlib.contextmanager
def memory_peak() -> Iterator[list[int]]:
    """Trace Python allocations inside the block; the list holds the peak in bytes after it."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
        peak[0] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ YAML alias bombs
def test_alias_bomb_in_chart_yaml_of_an_archive_is_refused(bounded: None) -> None:
    bomb = laughs() + CHART_YAML + "keywords: *l8\n"
    tgz = package_files("demo", {"Chart.yaml": bomb.encode()})
    with pytest.raises(ChartError, match="alias bomb"):
        load_chart_archive(tgz, "bomb.tgz")


def test_alias_bomb_in_values_yaml_of_an_archive_is_refused(bounded: None) -> None:
    tgz = package_files(
        "demo", {"Chart.yaml": CHART_YAML.encode(), "values.yaml": laughs().encode()}
    )
    with pytest.raises(ChartError, match=r"values\.yaml.*alias bomb"):
        load_chart_archive(tgz, "bomb.tgz")


def test_merge_key_bomb_in_values_is_refused(bounded: None) -> None:
    with pytest.raises(ChartError, match="alias bomb"):
        parse_values(merge_bomb().encode(), "bomb")


def test_alias_bomb_in_a_bundle_config_is_refused(tmp_path: Path, bounded: None) -> None:
    path = tmp_path / "bundle.yaml"
    path.write_text(
        laughs() + "apiVersion: bundler.dev/v1\nkind: Bundle\n"
        "metadata: {name: demo, annotations: {a: *l8}}\nchart: {path: c}\n"
    )
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_bundle_config(path)


def test_alias_bomb_in_a_trust_policy_is_refused(tmp_path: Path, bounded: None) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        laughs() + "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys: *l8\nbundles: *l8\n"
    )
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_trust_policy(path)


def test_merge_key_bomb_in_a_trust_policy_is_refused(tmp_path: Path, bounded: None) -> None:
    # Plain safe_load flattens merge keys while loading: 2**30 entries before any schema check.
    path = tmp_path / "policy.yaml"
    path.write_text(merge_bomb())
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_trust_policy(path)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ChartError):
        parse_values(b"a: &a [*a]\n", "loop")
    path = tmp_path / "bundle.yaml"
    path.write_text("a: &a {b: *a}\n")
    with pytest.raises(ConfigError):
        load_bundle_config(path)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 100_000])
def test_absurdly_nested_yaml_is_refused_not_a_recursion_error(
    depth: int, tmp_path: Path, bounded: None
) -> None:
    with pytest.raises(ChartError, match="nested deeper"):
        parse_values(nested(depth).encode(), "deep")
    with pytest.raises(ChartError, match="nested deeper"):
        load_chart_archive(
            package_files("demo", {"Chart.yaml": (CHART_YAML + nested(depth)).encode()}), "deep.tgz"
        )
    path = tmp_path / "policy.yaml"
    path.write_text(nested(depth))
    with pytest.raises(ConfigError):
        load_trust_policy(path)
    with pytest.raises(ChartError, match="nested deeper"):
        scan("kind: Pod\n" + nested(depth))


def test_ordinary_anchors_and_nesting_still_load() -> None:
    values = parse_values(
        (
            "defaults: &d {cpu: 1, memory: 2}\na: *d\nb: {<<: *d, gpu: 3}\n" + nested(MAX_DEPTH - 2)
        ).encode(),
        "ok",
    )
    assert values["a"] == {"cpu": 1, "memory": 2}
    assert values["b"] == {"cpu": 1, "memory": 2, "gpu": 3}
    # Up to the bound, aliases may multiply the tree: 9**5 extra nodes is fine.
    assert 9**5 < MAX_ALIAS_NODES < 9**7
    assert len(parse_values(laughs(levels=5).encode(), "ok")["l4"]) == 9


# ------------------------------------------------------------------ chart .tgz bombs
class _CountingGzip(gzip.GzipFile):
    inflated = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        _CountingGzip.inflated += len(data)
        return data


@pytest.fixture
def inflated(monkeypatch: pytest.MonkeyPatch) -> type[_CountingGzip]:
    _CountingGzip.inflated = 0
    monkeypatch.setattr(gzip, "GzipFile", _CountingGzip)  # what the chart reader opens
    return _CountingGzip


def _gzip_stream(header: bytes, zeros: int) -> bytes:
    """A gzip of ``header`` and ``zeros`` zero bytes, compressed without holding them all."""
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [comp.compress(header)]
    block = bytes(1 << 20)
    while zeros > 0:
        out.append(comp.compress(block[: min(zeros, len(block))]))
        zeros -= len(block)
    out.append(comp.flush())
    return b"".join(out)


def test_tgz_bomb_member_is_refused_without_inflating_it(
    inflated: type[_CountingGzip], bounded: None
) -> None:
    info = tarfile.TarInfo("demo/huge.bin")
    info.size = 300 * 1024 * 1024  # past MAX_UNPACKED_BYTES
    data = _gzip_stream(info.tobuf(tarfile.GNU_FORMAT), info.size)
    assert len(data) < 2 * 1024 * 1024  # about 1000:1
    with pytest.raises(UnsafeArchiveError, match="uncompressed"):
        load_chart_archive(data, "bomb.tgz")
    assert inflated.inflated < 64 * 1024  # the header, not the 300 MiB


@pytest.mark.parametrize(
    "kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE], ids=["gnu-longname", "pax-header"]
)
def test_tgz_bomb_in_an_extended_header_is_refused_without_reading_it(
    kind: bytes, inflated: type[_CountingGzip], bounded: None
) -> None:
    # tarfile reads an extended header whole into memory: 1 GiB claimed, 1 GiB allocated.
    info = tarfile.TarInfo("././@LongLink")
    info.type = kind
    info.size = 1024 * 1024 * 1024
    data = _gzip_stream(info.tobuf(tarfile.GNU_FORMAT), 4 * 1024 * 1024)
    with pytest.raises(UnsafeArchiveError, match="extended header"):
        load_chart_archive(data, "bomb.tgz")
    assert inflated.inflated < 64 * 1024


def test_tgz_whose_honest_members_add_up_past_the_bound_stops_at_the_bound(
    inflated: type[_CountingGzip], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chart_mod, "MAX_UNPACKED_BYTES", 1024 * 1024)
    files = {"Chart.yaml": CHART_YAML.encode()}
    files.update({f"f{i}.bin": bytes(600 * 1024) for i in range(5)})
    with pytest.raises(UnsafeArchiveError, match="uncompressed"):
        load_chart_archive(package_files("demo", files), "many.tgz")
    assert inflated.inflated < 2 * 1024 * 1024  # not the 3 MiB the archive holds


def _extended_chain(count: int) -> bytes:
    """``count`` PAX headers in a row, each applying to the next: tarfile recurses once each."""
    record = b"14 comment=xy\n"
    out = io.BytesIO()
    for _ in range(count):
        info = tarfile.TarInfo("pax")
        info.type = tarfile.XHDTYPE
        info.size = len(record)
        out.write(info.tobuf(tarfile.USTAR_FORMAT))
        out.write(record + bytes(-len(record) % 512))
    last = tarfile.TarInfo("demo/Chart.yaml")
    last.size = 0
    out.write(last.tobuf(tarfile.USTAR_FORMAT))
    out.write(bytes(1024))
    return out.getvalue()


def test_chain_of_extended_headers_is_an_unsafe_archive_not_a_recursion_error(
    tmp_path: Path,
) -> None:
    raw = _extended_chain(sys.getrecursionlimit())
    with pytest.raises(UnsafeArchiveError):
        load_chart_archive(gzip.compress(raw), "chain.tgz")
    with pytest.raises(UnsafeArchiveError):
        list(scan_tar(io.BytesIO(raw), Path("chain.tar")))


def test_layout_archive_with_a_huge_extended_header_is_refused_before_reading_it(
    tmp_path: Path,
) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 4 * 1024 * 1024 * 1024  # USTAR's largest is 8 GiB - 1
    path = tmp_path / "bomb.tar"
    with open(path, "wb") as fh:
        fh.write(info.tobuf(tarfile.USTAR_FORMAT))
        fh.truncate(info.size + 4096)  # sparse: the claim costs no disk, and must cost no RAM
    assert info.size > MAX_EXTENDED_HEADER_BYTES
    with memory_peak() as peak, pytest.raises(UnsafeArchiveError, match="extended header"):
        ArchiveReader(path)
    assert peak[0] < MEMORY_BOUND


# ------------------------------------------------------------------ JSON nesting and bounds
DEEP_JSON = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"[" * 1_000_000,
]


@pytest.mark.parametrize("raw", DEEP_JSON, ids=["lists", "objects", "unclosed"])
def test_absurdly_nested_json_is_a_manifest_error_everywhere(raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(raw)
    with pytest.raises(ManifestError):
        BundleLock.from_bytes(raw)
    with pytest.raises(ManifestError):
        parse_payload(raw[: 60 * 1024])
    with pytest.raises(ManifestError):
        PartsList.parse(raw, "deep")
    with pytest.raises(ManifestError):
        parse_archive_manifest(raw, "deep")


def _index(count: int) -> bytes:
    entry = {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(b"x")), "size": 1}
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry] * count},
        separators=(",", ":"),
    ).encode()


def test_index_with_more_than_10000_descriptors_is_refused() -> None:
    assert len(parse_manifest(_index(MAX_DESCRIPTORS)).manifests) == MAX_DESCRIPTORS
    with pytest.raises(ManifestError, match="more than 10000"):
        parse_manifest(_index(MAX_DESCRIPTORS + 1))


def test_image_with_more_than_10000_layers_is_refused() -> None:
    layer = {"mediaType": mt.OCI_CONFIG, "digest": str(Digest.of(b"x")), "size": 1}
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": layer,
            "layers": [layer] * (MAX_DESCRIPTORS + 1),
        }
    ).encode()
    with pytest.raises(ManifestError, match="more than 10000"):
        parse_manifest(raw)


def test_manifest_over_4_mib_in_a_layout_archive_is_refused(tmp_path: Path) -> None:
    big = b" " * (4 * 1024 * 1024 + 1)
    path = tmp_path / "big.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", big)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    reader = ArchiveReader(path)
    try:
        with pytest.raises(ManifestError, match="exceeds"):
            reader.read_file("index.json", 4 * 1024 * 1024)
    finally:
        reader.close()


# ------------------------------------------------------------------ references and digests
HEX = "a" * 64


@pytest.mark.parametrize(
    "text",
    [
        "registry.test/app\x00:1",
        "registry.test/app:1\x00",
        "registry.test/a\x00b",
        "registry.test/app:1\n",
        "registry.test/app\n:1",
        "registry.test/app\r",
        "registry.test/\u0430pp:1",  # Cyrillic a
        "registry.test/app\uff1a1",  # fullwidth colon
        "registry.test\u2215app:1",  # division slash
        "registry.test/app:\u0131",  # dotless i in a tag
        "r\u0435gistry.test/app:1",  # Cyrillic e in the host
        "registry.test/app\u200b:1",  # zero-width space
        "registry.test/../app:1",
        "registry.test/a/../b:1",
        "registry.test/..:1",
        "registry.test/./app:1",
        "registry.test//app:1",
        f"registry.test/app@sha256:{HEX.upper()}",
        f"registry.test/app@SHA256:{HEX}",
        f"registry.test/app@sha256:{HEX[:-1]}\u0430",
        f"registry.test/app@sha256:{HEX}\n",
        f"registry.test/app@sha256:{HEX}\x00",
    ],
)
def test_reference_with_illegal_characters_is_refused(text: str) -> None:
    with pytest.raises(ReferenceFormatError):
        Reference.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        f"sha256:{HEX.upper()}",
        f"sha256:{'A' + HEX[1:]}",
        f"sha256:{HEX}\x00",
        f"sha256:{HEX[:-1]}\u0430",
        f"sha256:{HEX[:-1]}\uff41",
        f"sha256\uff1a{HEX}",
        f"sha256:../{HEX[3:]}",
        f"sha256:{HEX[:32]}/{HEX[33:]}",
        f"\x00sha256:{HEX}",
        f"sha256:{HEX[:-1]}\u0660",  # Arabic-Indic zero: a digit to str.isdigit, not to us
    ],
)
def test_digest_with_illegal_characters_is_refused(text: str) -> None:
    with pytest.raises(ReferenceFormatError):
        Digest.parse(text)


def test_descriptor_with_an_illegal_digest_is_a_manifest_error() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {"mediaType": mt.OCI_MANIFEST, "digest": f"sha256:{HEX.upper()}", "size": 1}
            ],
        }
    ).encode()
    with pytest.raises(ManifestError, match="digest"):
        parse_manifest(raw)


# ------------------------------------------------------------------ registries
BLOB = b"blob bytes " * 20


def test_bearer_token_is_not_carried_by_a_redirect_to_another_host() -> None:
    fake = FakeRegistry(auth="bearer")
    fake.inject("GET", r"^/v2/app/blobs/", (307, {"Location": "https://cdn.test/b/1"}, b""))
    fake.inject("GET", r"^/b/1$", (200, {"Content-Length": str(len(BLOB))}, BLOB))
    client = make_client(fake, Credential("alice", "pw"))
    desc = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))
    assert b"".join(client.get_blob("app", desc)) == BLOB
    (cdn,) = [s for s in fake.log if s.url.startswith("https://cdn.test/")]
    assert cdn.authorization is None
    assert all("pw" not in v and "tok-" not in v for v in cdn.headers.values())


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2},
        "layers": [],
    }
).encode()
TOKEN = json.dumps({"token": "tok-realm", "expires_in": 300}).encode()


def _realm_client(realm: str, **options: object) -> tuple[FakeRegistry, object]:
    fake = FakeRegistry()
    challenge = f'Bearer realm="{realm}",service="registry.test",scope="repository:app:pull"'
    fake.inject(
        "GET",
        r"^/v2/app/manifests/v1$",
        (401, {"WWW-Authenticate": challenge}, b""),
        (200, {"Content-Type": mt.OCI_MANIFEST}, MANIFEST),
    )
    fake.inject("GET", r"^/token$", (200, {"Content-Type": "application/json"}, TOKEN))
    return fake, make_client(fake, Credential("alice", "s3cret-pw"), **options)


@pytest.mark.parametrize(
    "realm",
    [
        "http://auth.example.com/token",
        "http://10.0.0.8/token",
        "http://[2001:db8::1]/token",
        "HTTP://auth.example.com/token",
    ],
)
def test_bearer_realm_over_plain_http_to_a_remote_host_is_refused(realm: str) -> None:
    fake, client = _realm_client(realm)
    with pytest.raises(AuthError, match="plain HTTP") as err:
        client.get_manifest("app", "v1")  # type: ignore[attr-defined]
    assert "s3cret-pw" not in str(err.value)
    assert not [s for s in fake.log if s.path == "/token"]  # nothing was sent there


@pytest.mark.parametrize(
    "realm",
    [
        "http://127.0.0.1:5000/token",
        "http://localhost/token",
        "http://[::1]:8080/token",
        "https://auth.example.com/token",
    ],
)
def test_bearer_realm_over_loopback_http_or_https_is_used(realm: str) -> None:
    fake, client = _realm_client(realm)
    raw, _, _ = client.get_manifest("app", "v1")  # type: ignore[attr-defined]
    assert raw == MANIFEST
    (token,) = [s for s in fake.log if s.path == "/token"]
    assert token.url.startswith(realm)


# --plain-http no longer lifts the guard above: see test_registry_attacks.py
# (test_plain_http_option_does_not_send_credentials_to_a_remote_plain_http_realm).


@pytest.mark.parametrize(
    "realm", ["http://[oops/token", "https://[::1/token", "ftp://x/t", "/token", "http:///token"]
)
def test_unparsable_or_foreign_realm_is_an_auth_error(realm: str) -> None:
    _, client = _realm_client(realm)
    with pytest.raises(AuthError, match="not an http"):
        client.get_manifest("app", "v1")  # type: ignore[attr-defined]


# ------------------------------------------------------------------ through the CLI
@pytest.mark.parametrize("kind", ["pax-bomb", "symlink"])
def test_verify_of_a_hostile_archive_is_a_refusal_not_a_crash(kind: str, tmp_path: Path) -> None:
    from bundler.adapters.crypto import generate_key

    pub = tmp_path / "key.pub"
    pub.write_bytes(generate_key().public.pem)
    path = tmp_path / "hostile.tar"
    if kind == "pax-bomb":
        info = tarfile.TarInfo("././@PaxHeader")
        info.type = tarfile.XHDTYPE
        info.size = 4 * 1024 * 1024 * 1024
        with open(path, "wb") as fh:
            fh.write(info.tobuf(tarfile.USTAR_FORMAT))
            fh.truncate(info.size + 4096)
    else:
        with tarfile.open(path, "w") as tar:
            link = tarfile.TarInfo("index.json")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "bundler.cli.main", "verify", f"archive:{path}", "--key", pub],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    # The archive is refused before any verification step runs: the unsafe-archive code (8).
    # (The verification code, 12, is for bundles that open but fail a step.)
    assert proc.returncode in (8, 12), proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("field", ["salt", "nonce", "ciphertext"])
def test_encrypted_key_with_non_ascii_base64_is_a_key_file_error(field: str) -> None:
    from bundler.adapters import crypto

    saved = crypto.SCRYPT_N
    crypto.SCRYPT_N = 2  # cheap; the field is refused before scrypt runs anyway
    try:
        pem = crypto.encrypt_private_key(crypto.generate_key(), b"pw")
    finally:
        crypto.SCRYPT_N = saved
    body = json.loads(base64.b64decode("".join(pem.decode().splitlines()[1:-1])))
    holder = {"salt": body["kdf"], "nonce": body["cipher"], "ciphertext": body}[field]
    holder[field] = "\u0080" + holder[field]
    bad = crypto._pem_encode(crypto.COSIGN_PRIVATE_KEY_LABEL, json.dumps(body).encode())
    with pytest.raises(KeyFileError, match="not valid base64"):
        crypto.decrypt_private_key(bad, b"pw", "key")
