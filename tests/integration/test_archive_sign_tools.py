"""A signed archive is the unsigned one plus appended members, and other tools still read it.

``bundler sign`` and ``approve`` on ``archive:FILE`` append the signatures and a new
``index.json`` to the tar. The judges are skopeo (``oci-archive:``), GNU tar and umoci (on the
extracted layout): each must take the last ``index.json`` and read the images as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from copy_support import Cli
from pack_support import pack_cli
from transfer_support import (
    PASS_VAR,
    REF_NAME,
    Keys,
    archive_refs,
    env_with_passphrase,
    make_keys,
    members,
    ok,
    pack,
    sign,
    signature_tag,
    verified,
)

WEB_REF = "example.local/demo/web:1.0.0"  # an image index (two platforms)
API_REF = "example.local/demo/api:1.0.0"  # an image manifest


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("append-keys"), "vendor", "secops")


@pytest.fixture(scope="module")
def acli(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return env_with_passphrase(pack_cli(tmp_path_factory.mktemp("append") / "user", helm))


@pytest.fixture(scope="module")
def unsigned(acli: Cli, example_layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    archive = tmp_path_factory.mktemp("append-unsigned") / "demo.tar"
    pack(acli, example_layout, f"archive:{archive}")
    return archive


def _copy(archive: Path, tmp_path: Path) -> Path:
    out = tmp_path / archive.name
    shutil.copyfile(archive, out)
    return out


def _index_copies(archive: Path) -> list[dict[str, object]]:
    with tarfile.open(archive) as tar:
        found = []
        for member in tar.getmembers():
            if member.name == "index.json":
                fh = tar.extractfile(member)
                assert fh is not None
                found.append(json.loads(fh.read()))
        return found


def _skopeo_digest(skopeo: str, location: str) -> str:
    raw = subprocess.run(
        [skopeo, "inspect", "--raw", location], capture_output=True, check=True, timeout=120
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_signed_archive_keeps_its_bytes_and_skopeo_reads_the_appended_index(
    acli: Cli, keys: Keys, unsigned: Path, skopeo: str, tmp_path: Path
) -> None:
    archive = _copy(unsigned, tmp_path)
    before = archive.read_bytes()
    old = members(archive)
    last = old[-1]
    end = last.offset_data + last.size + (-last.size % tarfile.BLOCKSIZE)
    refs_before = archive_refs(archive)
    bundle = next(d for ref, d in refs_before.items() if ref.startswith("demo:"))

    sign(acli, f"archive:{archive}", keys.private("vendor"))

    assert archive.read_bytes()[:end] == before[:end]
    assert len(_index_copies(archive)) == 2
    refs = archive_refs(archive)
    tag = signature_tag(bundle)
    assert tag in refs and tag not in refs_before  # named only by the appended index.json
    # skopeo extracts the tar: the later index.json replaces the earlier one.
    assert _skopeo_digest(skopeo, f"oci-archive:{archive}:{tag}") == refs[tag]
    assert _skopeo_digest(skopeo, f"oci-archive:{archive}:{WEB_REF}") == refs[WEB_REF]
    out = tmp_path / "copied"
    for ref, flags in ((WEB_REF, ["--all"]), (API_REF, [])):
        subprocess.run(
            [skopeo, "copy", *flags, f"oci-archive:{archive}:{ref}", f"oci:{out}:{ref}"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        assert _skopeo_digest(skopeo, f"oci:{out}:{ref}") == refs[ref]
    verified(acli, f"archive:{archive}", keys.public("vendor"))


def test_skopeo_takes_the_last_of_two_index_json_members(skopeo: str, tmp_path: Path) -> None:
    # The rule itself, on a tar made by hand: the image is named only by the first index.json,
    # then only by the second; skopeo must find it under the second name, not the first.
    layer = b"layer"
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()

    def index(name: str) -> bytes:
        entry = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": len(manifest),
            "annotations": {REF_NAME: name},
        }
        return json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()

    archive = tmp_path / "two-indexes.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index("first")),
            *((f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b) for b in (layer, config)),
            (f"blobs/sha256/{digest.removeprefix('sha256:')}", manifest),
            ("index.json", index("second")),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    assert _skopeo_digest(skopeo, f"oci-archive:{archive}:second") == digest
    first = subprocess.run(
        [skopeo, "inspect", "--raw", f"oci-archive:{archive}:first"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert first.returncode != 0


def test_approved_archive_reads_with_gnu_tar_and_umoci(
    acli: Cli, keys: Keys, unsigned: Path, umoci: str, tmp_path: Path
) -> None:
    archive = _copy(unsigned, tmp_path)
    sign(acli, f"archive:{archive}", keys.private("vendor"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - name: vendor\n    role: vendor\n    path: {keys.public('vendor')}\n"
        f"  - name: secops\n    role: approval\n    path: {keys.public('secops')}\n"
        "bundles:\n  - name: demo\n    require:\n      - role: vendor\n      - role: approval\n"
    )
    res = acli(
        "approve",
        f"archive:{archive}",
        "--key",
        keys.private("secops"),
        "--policy",
        policy,
        "--passphrase-env",
        PASS_VAR,
    )
    assert "approved by secops (approval)" in ok(res).stdout
    assert len(_index_copies(archive)) == 3
    ok(acli("verify", f"archive:{archive}", "--policy", policy))

    layout = tmp_path / "extracted"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True, timeout=120)
    assert json.loads((layout / "index.json").read_bytes()) == _index_copies(archive)[-1]
    listed = subprocess.run(
        [umoci, "ls", "--layout", str(layout)], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    refs = archive_refs(archive)
    assert set(listed.split()) == set(refs)
    # umoci unpack checks every layer against its digest as it extracts it.
    bundle_dir = tmp_path / "unpacked"
    subprocess.run(
        [umoci, "unpack", "--rootless", "--image", f"{layout}:{API_REF}", str(bundle_dir)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert any((bundle_dir / "rootfs").iterdir())


def test_sign_of_a_split_archive_is_refused_and_changes_nothing(
    acli: Cli, keys: Keys, unsigned: Path, tmp_path: Path
) -> None:
    split = tmp_path / "split.tar"
    ok(acli("export", f"archive:{unsigned}", "--to", f"archive:{split}", "--max-volume-size", "1M"))
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    res = acli(
        "sign", f"archive:{split}", "--key", keys.private("vendor"), "--passphrase-env", PASS_VAR
    )

    assert res.returncode == 2, res.describe()
    assert "split into volumes" in res.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
