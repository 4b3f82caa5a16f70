"""``bundler copy`` as a user meets it on bad input: exit codes, one-line errors, and no
half-written destinations (unsafe archives, missing sources, interrupted copies)."""

from __future__ import annotations

import array
import fcntl
import io
import json
import os
import signal
import subprocess
import tarfile
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from copy_support import (
    API_REF,
    WEB_REF,
    Cli,
    Result,
    layout_entry,
    layout_index,
    layout_json,
    leftovers,
)

REF_NAME = "org.opencontainers.image.ref.name"


def _assert_error(res: Result, code: int) -> str:
    assert res.returncode == code, res.describe()
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.describe()
    assert lines[0].startswith("error: "), res.describe()
    assert "Traceback" not in res.stderr
    res.assert_no_result()
    return lines[0]


# ------------------------------------------------------------------ usage errors
@pytest.mark.parametrize(
    "source",
    [
        "127.0.0.1:5000/Upper/Case:1",  # repositories are lowercase
        "127.0.0.1:5000/repo:bad tag",
        "127.0.0.1:5000/repo:-leading-dash",
        "127.0.0.1:5000/repo@sha256:1234",  # digest too short
        "127.0.0.1:5000/repo@md5:d41d8cd98f00b204e9800998ecf8427e",
        "127.0.0.1:5000//repo:1",
        "oci:",
        "oci:somewhere:",
        "archive:",
        "",
    ],
)
def test_malformed_source_is_a_usage_error(cli: Cli, tmp_path: Path, source: str) -> None:
    out = tmp_path / "out"
    res = cli.copy(source, f"oci:{out}:x")
    _assert_error(res, 2)
    assert not out.exists()


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:5000/repo@sha256:" + "a" * 64,  # a copy target names a tag, not a digest
        "127.0.0.1:5000/Repo:1",
        "oci:",
    ],
)
def test_malformed_target_is_a_usage_error(cli: Cli, example_layout: Path, target: str) -> None:
    res = cli.copy(f"oci:{example_layout}:{API_REF}", target)
    _assert_error(res, 2)


def test_layout_target_needs_a_name(cli: Cli, example_layout: Path, tmp_path: Path) -> None:
    """A digest-selected source carries no name, and a layout entry needs one."""
    digest = layout_entry(example_layout, API_REF)["digest"]
    out = tmp_path / "out"
    res = cli.copy(f"oci:{example_layout}:{digest}", f"oci:{out}")
    _assert_error(res, 2)
    assert not (out / "index.json").exists()


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["copy", "--from", "oci:somewhere:x"], "--to"),
        (["copy", "--from", "oci:a:x", "--to", "oci:b:x", "--parallel", "0"], "--parallel"),
        (["copy", "--from", "oci:a:x", "--to", "oci:b:x", "--no-such-flag"], "--no-such-flag"),
        (["copy", "--from", "oci:a:x", "--to", "oci:b:x", "-o", "yaml"], "yaml"),
    ],
    ids=["missing-to", "parallel-zero", "unknown-flag", "bad-output"],
)
def test_command_line_mistakes_are_usage_errors(cli: Cli, args: list[str], mentions: str) -> None:
    res = cli(*args)
    assert res.returncode == 2, res.describe()
    assert "Traceback" not in res.stderr, res.describe()
    assert mentions in res.stderr


# --------------------------------------------------------------------- not found
def test_missing_layout_directory_is_not_found(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = cli.copy(f"oci:{tmp_path / 'nowhere'}:x", f"oci:{out}:x")
    line = _assert_error(res, 3)
    assert "nowhere" in line
    assert not out.exists()


def test_missing_ref_in_layout_is_not_found(cli: Cli, example_layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    res = cli.copy(f"oci:{example_layout}:example.local/demo/absent:9", f"archive:{out}:x")
    line = _assert_error(res, 3)
    assert "example.local/demo/absent:9" in line
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_missing_digest_in_layout_is_not_found(
    cli: Cli, example_layout: Path, tmp_path: Path
) -> None:
    res = cli.copy(f"oci:{example_layout}:sha256:{'0' * 64}", f"oci:{tmp_path / 'o'}:x")
    _assert_error(res, 3)


def test_missing_archive_is_not_found(cli: Cli, tmp_path: Path) -> None:
    res = cli.copy(f"archive:{tmp_path / 'absent.tar'}:x", f"oci:{tmp_path / 'out'}:x")
    _assert_error(res, 3)
    assert not (tmp_path / "out").exists()


def test_missing_blob_fails_without_writing_the_archive(
    cli: Cli, example_layout_copy: Path, tmp_path: Path
) -> None:
    manifest = layout_json(
        example_layout_copy, layout_entry(example_layout_copy, API_REF)["digest"]
    )
    layer = manifest["layers"][-1]["digest"]
    (example_layout_copy / "blobs" / "sha256" / layer.split(":")[1]).unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = cli.copy(f"oci:{example_layout_copy}:{API_REF}", f"archive:{out_dir / 'api.tar'}:api")
    line = _assert_error(res, 3)
    assert layer in line
    assert list(out_dir.iterdir()) == []


# ---------------------------------------------------------------- unsafe archives
def _tar_bytes(data: bytes, name: str) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def _layout_tar(layout: Path, path: Path, extra: Callable[[tarfile.TarFile], None]) -> None:
    """A tar of a layout holding only the api image, plus whatever ``extra`` adds."""
    entry = layout_entry(layout, API_REF)
    manifest = layout_json(layout, entry["digest"])
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(*_tar_bytes(b'{"imageLayoutVersion":"1.0.0"}', "oci-layout"))
        tar.addfile(*_tar_bytes(json.dumps(index).encode(), "index.json"))
        for desc in [entry, manifest["config"], *manifest["layers"]]:
            hexpart = desc["digest"].split(":")[1]
            data = (layout / "blobs" / "sha256" / hexpart).read_bytes()
            tar.addfile(*_tar_bytes(data, f"blobs/sha256/{hexpart}"))
        extra(tar)


def _escape(tar: tarfile.TarFile) -> None:
    tar.addfile(*_tar_bytes(b"owned", "../evil"))


def _nested_escape(tar: tarfile.TarFile) -> None:
    tar.addfile(*_tar_bytes(b"owned", "blobs/sha256/../../../evil"))


def _absolute(tar: tarfile.TarFile) -> None:
    tar.addfile(*_tar_bytes(b"owned", "/tmp/evil"))


def _symlink(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("blobs/sha256/" + "e" * 64)
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    tar.addfile(info)


def _hardlink(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("blobs/sha256/" + "f" * 64)
    info.type = tarfile.LNKTYPE
    info.linkname = "index.json"
    tar.addfile(info)


def _device(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("blobs/sha256/" + "d" * 64)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3  # /dev/null
    tar.addfile(info)


def _fifo(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("blobs/sha256/" + "c" * 64)
    info.type = tarfile.FIFOTYPE
    tar.addfile(info)


@pytest.mark.parametrize(
    "extra",
    [_escape, _nested_escape, _absolute, _symlink, _hardlink, _device, _fifo],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "fifo"],
)
@pytest.mark.parametrize("target_kind", ["oci", "archive"])
def test_unsafe_archive_is_refused_and_nothing_written(
    cli: Cli,
    example_layout: Path,
    tmp_path: Path,
    extra: Callable[[tarfile.TarFile], None],
    target_kind: str,
) -> None:
    evil = tmp_path / "in" / "evil.tar"
    evil.parent.mkdir()
    _layout_tar(example_layout, evil, extra)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = (
        f"oci:{out_dir / 'layout'}:api"
        if target_kind == "oci"
        else f"archive:{out_dir / 'api.tar'}:api"
    )
    res = cli.copy(f"archive:{evil}:{API_REF}", target)
    _assert_error(res, 8)
    assert list(out_dir.iterdir()) == []
    assert not (tmp_path / "evil").exists()
    assert sorted(p.name for p in evil.parent.iterdir()) == ["evil.tar"]


def test_clean_archive_of_the_same_shape_is_accepted(
    cli: Cli, example_layout: Path, tmp_path: Path
) -> None:
    """Control for the unsafe-archive cases: without the bad member the copy works."""
    good = tmp_path / "good.tar"
    _layout_tar(example_layout, good, lambda tar: None)
    doc = cli.copy_ok(f"archive:{good}:{API_REF}", f"oci:{tmp_path / 'out'}:api")
    assert doc["digest"] == layout_entry(example_layout, API_REF)["digest"]


def test_not_a_tar_is_refused(cli: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive at all" * 100)
    res = cli.copy(f"archive:{junk}:x", f"oci:{tmp_path / 'out'}:x")
    _assert_error(res, 8)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------ interrupted copies
MiB = 1024 * 1024


def _stalled_layout(
    synth: ModuleType, root: Path, stalled: int, small: int = 0
) -> tuple[Path, list[tuple[Path, bytes]], list[str]]:
    """A layout whose ``stalled`` biggest layers are FIFOs: reading one blocks until the
    test feeds it. Returns (layout, [(fifo, content)], digests of the small layers)."""
    layout = root / "stalled"
    specs = [synth.LayerSpec(f"stall-{i}", 4 * MiB + i, level=0) for i in range(stalled)]
    specs += [synth.LayerSpec(f"small-{i}", 16 * 1024, level=0) for i in range(small)]
    desc = synth.write_image(layout, "img", specs)
    layers = layout_json(layout, desc["digest"])["layers"]
    fifos: list[tuple[Path, bytes]] = []
    for layer in layers[:stalled]:
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        data = blob.read_bytes()
        blob.unlink()
        os.mkfifo(blob)
        fifos.append((blob, data))
    return layout, fifos, [layer["digest"] for layer in layers[stalled:]]


class _Feeder:
    """Writes the first half of a blob into its FIFO, then holds it open until released."""

    def __init__(self, fifo: Path, data: bytes) -> None:
        self.fed = threading.Event()
        self.release = threading.Event()
        self.fd: int | None = None
        self.thread = threading.Thread(target=self._run, args=(fifo, data), daemon=True)
        self.thread.start()

    def _run(self, fifo: Path, data: bytes) -> None:
        try:
            fd = os.open(fifo, os.O_WRONLY)
            self.fd = fd
            try:
                os.write(fd, data[: len(data) // 2])
                self.fed.set()
                self.release.wait(60)
            finally:
                self.fd = None
                os.close(fd)
        except OSError:
            self.fed.set()

    def drained(self) -> bool:
        """Whether the reader has taken every byte fed so far (none left in the pipe)."""
        fd = self.fd
        if fd is None:
            return True
        unread = array.array("i", [0])
        try:
            fcntl.ioctl(fd, termios.FIONREAD, unread)
        except OSError:
            return True  # closed meanwhile
        return unread[0] == 0

    def stop(self) -> None:
        self.release.set()
        self.thread.join(10)


def _wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``predicate`` (bounded: fails after ``timeout`` s, a limit, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


class _Stderr:
    """Collects a process's stderr in a thread, so a test can wait for a line while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self.thread.start()

    def _read(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self.lines.append(line)

    def has(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines)

    def text(self) -> str:
        self.thread.join(30)
        return "".join(self.lines)


def _sigint_as_default() -> None:
    """In the child: undo an ignored SIGINT (a shell's background job, nohup) so Ctrl-C counts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(proc: subprocess.Popen[str], feeders: list[_Feeder]) -> str:
    """SIGINT the copy while its reads are stalled, unblock the reads once it has said so.

    Ordering comes from what the process shows, never from sleeps: the signal goes once every
    fed byte has been read (the pipes are empty, the reads blocked), and the reads resume only
    after bundler has printed that it saw the interrupt (its handler has run, so the queue is
    being dropped while the stalled transfers are still blocked).
    """
    stderr = _Stderr(proc)
    try:
        for feeder in feeders:
            assert feeder.fed.wait(30), "bundler never started reading a stalled layer"
        _wait_for(lambda: all(feeder.drained() for feeder in feeders))
        proc.send_signal(signal.SIGINT)
        _wait_for(lambda: stderr.has("interrupted:") or proc.poll() is not None)
        for feeder in feeders:
            feeder.stop()
        proc.wait(30)
        return stderr.text()
    finally:
        for feeder in feeders:
            feeder.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_interrupted_copy_to_archive_leaves_no_archive_and_no_partial_file(
    cli: Cli, synth: ModuleType, tmp_path: Path
) -> None:
    layout, fifos, _ = _stalled_layout(synth, tmp_path, stalled=1)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    feeders = [_Feeder(*fifo) for fifo in fifos]
    proc = cli.popen(
        "copy",
        "--from",
        f"oci:{layout}:img",
        "--to",
        f"archive:{out_dir / 'img.tar'}:img",
        "-q",
        preexec_fn=_sigint_as_default,
    )
    _wait_for(lambda: any(p.name.endswith(".partial") for p in out_dir.iterdir()))
    stderr = _interrupt(proc, feeders)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("interrupted: stopping"), stderr
    assert list(out_dir.iterdir()) == []


def test_sigterm_stops_a_copy_cleanly_with_exit_143(cli: Cli, tmp_path: Path) -> None:
    """SIGTERM (what a service manager or a timeout sends) is handled like Ctrl-C."""
    fifo = tmp_path / "image.tar"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    proc = cli.popen("copy", "--from", f"docker-archive:{fifo}", "--to", f"oci:{out}:x", "-q")
    writer: list[int] = []

    def reader_has_it_open() -> bool:
        try:  # a FIFO opens for writing without blocking only once a reader holds it
            writer.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return proc.poll() is not None
        return True

    try:
        _wait_for(reader_has_it_open)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        for fd in writer:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    assert stderr.startswith("terminated: stopping"), stderr
    assert not out.exists() or not (out / "index.json").exists()


def test_interrupt_stops_a_parallel_copy_without_moving_queued_blobs(
    cli: Cli, synth: ModuleType, example_layout: Path, tmp_path: Path
) -> None:
    """Ctrl-C while both transfer slots are stalled: the blobs queued behind them must not
    be copied afterwards, and no ref may be written."""
    layout, fifos, queued = _stalled_layout(synth, tmp_path, stalled=2, small=6)
    target = tmp_path / "out"
    cli.copy_ok(f"oci:{example_layout}:{API_REF}", f"oci:{target}:keep")
    feeders = [_Feeder(*fifo) for fifo in fifos]
    proc = cli.popen(
        "copy",
        "--from",
        f"oci:{layout}:img",
        "--to",
        f"oci:{target}:img",
        "--parallel",
        "2",
        "-q",
        preexec_fn=_sigint_as_default,
    )
    stderr = _interrupt(proc, feeders)
    assert proc.returncode == 130, stderr
    assert "interrupted: stopping" in stderr
    assert [m["annotations"][REF_NAME] for m in layout_index(target)["manifests"]] == ["keep"]
    moved = [d for d in queued if (target / "blobs" / "sha256" / d.split(":")[1]).exists()]
    assert moved == [], f"{len(moved)} queued blobs were still copied after the interrupt"


def test_archive_target_into_missing_directory_is_a_usage_error(
    cli: Cli, example_layout: Path, tmp_path: Path
) -> None:
    res = cli.copy(f"oci:{example_layout}:{API_REF}", f"archive:{tmp_path / 'no' / 'x.tar'}:x")
    _assert_error(res, 2)
    assert not (tmp_path / "no").exists()


# ------------------------------------------------------------------- good output
def test_copy_json_output_and_layout_merge(cli: Cli, example_layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "layout"
    web = cli.copy_ok(f"oci:{example_layout}:{WEB_REF}", f"oci:{out}:web")
    assert set(web) >= {
        "source",
        "target",
        "digest",
        "mediaType",
        "tag",
        "manifests",
        "blobs",
        "bytes",
        "referrers",
        "tags",
        "seconds",
    }
    assert web["digest"] == layout_entry(example_layout, WEB_REF)["digest"]
    assert web["tag"] == "web" and web["tags"] == ["web"]
    api = cli.copy_ok(f"oci:{example_layout}:{API_REF}", f"oci:{out}:api")
    # a second image joins the layout; the first stays named
    assert layout_entry(out, "web")["digest"] == web["digest"]
    assert layout_entry(out, "api")["digest"] == api["digest"]
    # text mode: the digest on stdout, the summary on stderr
    res = cli("copy", "--from", f"oci:{example_layout}:{API_REF}", "--to", f"oci:{out}:api2")
    assert res.returncode == 0, res.describe()
    assert res.stdout.split()[0] == api["digest"]
    assert "manifests" in res.stderr
