"""Docker config.json credentials: read the way Docker does, written without leaking."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bundler.adapters.registry.credentials import Credential, CredentialStore
from bundler.errors import AuthError, BundlerError


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "docker"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


def _write_config(config_dir: Path, doc: Any) -> None:
    (config_dir / "config.json").write_text(json.dumps(doc))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


HELPER = textwrap.dedent(
    """\
    #!{python}
    import json, sys
    from pathlib import Path

    state = Path({state!r})
    log = Path({log!r})
    action = sys.argv[1]
    data = sys.stdin.read()
    with log.open("a") as fh:
        fh.write(json.dumps([action, data]) + "\\n")
    store = json.loads(state.read_text()) if state.exists() else {{}}
    if action == "get":
        entry = store.get(data.strip())
        if entry is None:
            print("credentials not found in native keychain")
            sys.exit(1)
        print(json.dumps({{"ServerURL": data.strip(), "Username": entry[0], "Secret": entry[1]}}))
    elif action == "store":
        doc = json.loads(data)
        store[doc["ServerURL"]] = [doc["Username"], doc["Secret"]]
        state.write_text(json.dumps(store))
    elif action == "erase":
        store.pop(data.strip(), None)
        state.write_text(json.dumps(store))
    else:
        print("unknown action")
        sys.exit(2)
    """
)


class FakeHelper:
    """``docker-credential-<name>`` on PATH, keeping its secrets in a JSON file."""

    def __init__(self, bin_dir: Path, name: str) -> None:
        self.state = bin_dir / f"{name}.state.json"
        self.log = bin_dir / f"{name}.log"
        script = bin_dir / f"docker-credential-{name}"
        script.write_text(
            HELPER.format(python=sys.executable, state=str(self.state), log=str(self.log))
        )
        script.chmod(0o755)

    def seed(self, entries: dict[str, tuple[str, str]]) -> None:
        self.state.write_text(json.dumps({k: list(v) for k, v in entries.items()}))

    def entries(self) -> dict[str, list[str]]:
        return json.loads(self.state.read_text()) if self.state.exists() else {}

    def calls(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        return [tuple(json.loads(line)) for line in self.log.read_text().splitlines()]


@pytest.fixture
def helper_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


# -- reading auths -------------------------------------------------------------------------


def test_docker_config_env_names_the_config_directory(config_dir: Path) -> None:
    _write_config(config_dir, {"auths": {"reg.test": {"auth": _b64("u:p")}}})
    store = CredentialStore()
    assert store.path == config_dir / "config.json"
    assert store.get("reg.test") == Credential("u", "p")


def test_auth_field_is_base64_user_colon_password(config_dir: Path) -> None:
    _write_config(config_dir, {"auths": {"reg.test:5000": {"auth": _b64("alice:pa:ss:word")}}})
    assert CredentialStore().get("reg.test:5000") == Credential("alice", "pa:ss:word")


def test_username_and_password_fields_are_read(config_dir: Path) -> None:
    _write_config(config_dir, {"auths": {"reg.test": {"username": "bob", "password": "pw"}}})
    assert CredentialStore().get("reg.test") == Credential("bob", "pw")


def test_identity_token_becomes_a_refresh_token_credential(config_dir: Path) -> None:
    _write_config(
        config_dir, {"auths": {"reg.test": {"auth": _b64("u:p"), "identitytoken": "refresh-me"}}}
    )
    cred = CredentialStore().get("reg.test")
    assert cred == Credential("<token>", "refresh-me")
    assert cred is not None and cred.is_identity_token


@pytest.mark.parametrize(
    ("key", "asked"),
    [
        ("https://reg.test", "reg.test"),
        ("https://reg.test/v2/", "reg.test"),
        ("http://reg.test:5000", "reg.test:5000"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("reg.test", "https://reg.test/"),
    ],
)
def test_host_keys_with_url_prefixes_match_the_bare_host(
    config_dir: Path, key: str, asked: str
) -> None:
    _write_config(config_dir, {"auths": {key: {"auth": _b64("u:p")}}})
    assert CredentialStore().get(asked) == Credential("u", "p")


def test_credentials_for_another_host_are_not_used(config_dir: Path) -> None:
    _write_config(
        config_dir,
        {
            "auths": {
                "reg.test": {"auth": _b64("u:p")},
                "reg.test.evil.example": {"auth": _b64("x:y")},
            }
        },
    )
    assert CredentialStore().get("reg.tes") is None
    assert CredentialStore().get("reg.test:5000") is None
    assert CredentialStore().get("evil.example") is None


def test_missing_config_means_no_credentials(config_dir: Path) -> None:
    assert CredentialStore().get("reg.test") is None


def test_empty_config_file_means_no_credentials(config_dir: Path) -> None:
    (config_dir / "config.json").write_text("  \n")
    assert CredentialStore().get("reg.test") is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '"text"',
        json.dumps({"auths": {"reg.test": {"auth": "%%% not base64 %%%"}}}),
        json.dumps({"auths": {"reg.test": {"auth": _b64("no-colon-here")}}}),
        json.dumps({"auths": {"reg.test": {"auth": 12345}}}),
    ],
    ids=[
        "invalid-json",
        "array",
        "string",
        "auth-not-base64",
        "auth-without-colon",
        "auth-not-a-string",
    ],
)
def test_malformed_config_is_an_auth_error(config_dir: Path, content: str) -> None:
    (config_dir / "config.json").write_text(content)
    with pytest.raises(AuthError):
        CredentialStore().get("reg.test")


def test_login_into_a_config_whose_auths_is_not_an_object_is_an_auth_error(
    config_dir: Path,
) -> None:
    _write_config(config_dir, {"auths": ["reg.test"]})
    with pytest.raises(AuthError):
        CredentialStore().store("reg.test", Credential("u", "p"))


# -- credential helpers ---------------------------------------------------------------


def test_cred_helper_for_the_host_is_asked_first(config_dir: Path, helper_bin: Path) -> None:
    helper = FakeHelper(helper_bin, "fake")
    helper.seed({"reg.test": ("from-helper", "s3cret")})
    _write_config(
        config_dir,
        {
            "credHelpers": {"https://reg.test": "fake"},
            "auths": {"reg.test": {"auth": _b64("from-file:pw")}},
        },
    )
    assert CredentialStore().get("reg.test") == Credential("from-helper", "s3cret")
    assert helper.calls() == [("get", "reg.test")]


def test_creds_store_is_used_for_hosts_without_their_own_helper(
    config_dir: Path, helper_bin: Path
) -> None:
    helper = FakeHelper(helper_bin, "store")
    helper.seed({"other.test": ("u", "from-store")})
    _write_config(config_dir, {"credsStore": "store"})
    assert CredentialStore().get("other.test") == Credential("u", "from-store")


def test_helper_without_the_host_falls_back_to_auths(config_dir: Path, helper_bin: Path) -> None:
    FakeHelper(helper_bin, "empty")
    _write_config(
        config_dir, {"credsStore": "empty", "auths": {"reg.test": {"auth": _b64("file:pw")}}}
    )
    assert CredentialStore().get("reg.test") == Credential("file", "pw")


def test_store_goes_through_the_helper_and_never_into_the_file(
    config_dir: Path, helper_bin: Path
) -> None:
    helper = FakeHelper(helper_bin, "fake")
    _write_config(config_dir, {"credsStore": "fake"})
    CredentialStore().store("https://reg.test/", Credential("alice", "top-secret"))
    assert helper.entries() == {"reg.test": ["alice", "top-secret"]}
    assert "top-secret" not in (config_dir / "config.json").read_text()


def test_erase_goes_through_the_helper(config_dir: Path, helper_bin: Path) -> None:
    helper = FakeHelper(helper_bin, "fake")
    helper.seed({"reg.test": ("u", "p"), "keep.test": ("k", "k")})
    _write_config(config_dir, {"credsStore": "fake"})
    assert CredentialStore().erase("reg.test") is True
    assert helper.entries() == {"keep.test": ["k", "k"]}
    assert ("erase", "reg.test") in helper.calls()


def test_missing_helper_program_is_an_auth_error(config_dir: Path, helper_bin: Path) -> None:
    _write_config(config_dir, {"credsStore": "not-installed-anywhere"})
    with pytest.raises(AuthError, match="not installed"):
        CredentialStore().get("reg.test")


def test_helper_answering_garbage_is_an_auth_error(config_dir: Path, helper_bin: Path) -> None:
    script = helper_bin / "docker-credential-garbage"
    script.write_text("#!/bin/sh\necho 'this is not json'\n")
    script.chmod(0o755)
    _write_config(config_dir, {"credsStore": "garbage"})
    with pytest.raises(AuthError, match="malformed"):
        CredentialStore().get("reg.test")


def test_helper_name_that_is_a_path_is_never_executed(config_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.sh").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (tmp_path / "evil.sh").chmod(0o755)
    _write_config(config_dir, {"credsStore": "x/../../evil.sh"})
    with pytest.raises(BundlerError):
        CredentialStore().get("reg.test")
    assert not marker.exists()


# -- writing ------------------------------------------------------------------------------


def test_store_writes_base64_auth_with_mode_0600(config_dir: Path) -> None:
    CredentialStore().store("reg.test", Credential("alice", "pw"))
    path = config_dir / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"auths": {"reg.test": {"auth": _b64("alice:pw")}}}
    assert CredentialStore().get("reg.test") == Credential("alice", "pw")


def test_store_tightens_a_world_readable_config_and_keeps_other_settings(
    config_dir: Path,
) -> None:
    path = config_dir / "config.json"
    _write_config(
        config_dir,
        {
            "auths": {
                "https://reg.test/v1/": {"auth": _b64("old:old")},
                "other.test": {"auth": _b64("o:o")},
            },
            "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
        },
    )
    path.chmod(0o644)
    CredentialStore().store("reg.test", Credential("new", "new"))
    doc = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert doc["proxies"] == {"default": {"httpProxy": "http://proxy:3128"}}
    assert doc["auths"] == {
        "other.test": {"auth": _b64("o:o")},
        "reg.test": {"auth": _b64("new:new")},
    }


def test_store_replaces_the_file_atomically(config_dir: Path) -> None:
    path = config_dir / "config.json"
    _write_config(config_dir, {"auths": {}})
    inode = path.stat().st_ino
    CredentialStore().store("reg.test", Credential("u", "p"))
    assert path.stat().st_ino != inode  # a new file renamed over the old, not a rewrite
    assert sorted(p.name for p in config_dir.iterdir()) == ["config.json"]


def test_failed_write_leaves_the_old_config_and_no_temp_file(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(config_dir, {"auths": {"reg.test": {"auth": _b64("old:old")}}})
    before = (config_dir / "config.json").read_bytes()

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", disk_full)
    with pytest.raises(AuthError, match="cannot write"):
        CredentialStore().store("reg.test", Credential("new", "new"))
    assert (config_dir / "config.json").read_bytes() == before
    assert sorted(p.name for p in config_dir.iterdir()) == ["config.json"]


def test_store_creates_a_private_config_directory(tmp_path: Path) -> None:
    directory = tmp_path / "fresh" / "docker"
    CredentialStore(directory).store("reg.test", Credential("u", "p"))
    assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((directory / "config.json").stat().st_mode) == 0o600


def test_erase_removes_every_spelling_of_the_host(config_dir: Path) -> None:
    _write_config(
        config_dir,
        {
            "auths": {
                "https://reg.test/v1/": {"auth": _b64("a:a")},
                "reg.test": {"auth": _b64("b:b")},
                "keep.test": {"auth": _b64("k:k")},
            }
        },
    )
    assert CredentialStore().erase("reg.test") is True
    assert list(json.loads((config_dir / "config.json").read_text())["auths"]) == ["keep.test"]
    assert stat.S_IMODE((config_dir / "config.json").stat().st_mode) == 0o600
    assert CredentialStore().erase("reg.test") is False


# -- secrets stay secret --------------------------------------------------------------


def test_credential_repr_hides_the_password() -> None:
    cred = Credential("alice", "hunter2-very-secret")
    for text in (repr(cred), str(cred), f"{cred}", f"{cred!r}", repr([cred]), repr({"c": cred})):
        assert "hunter2-very-secret" not in text
        assert "alice" in text
