"""Image references: the OCI/distribution grammar, Docker's defaults, and what must be refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler.errors import ReferenceFormatError, UsageError
from bundler.model.digest import Digest
from bundler.model.reference import Reference, is_valid_tag

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"


# -- Docker's defaults --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag"),
    [
        ("nginx", "docker.io", "library/nginx", "latest"),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25"),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7"),
        ("docker.io/nginx:1.25", "docker.io", "library/nginx", "1.25"),
        ("index.docker.io/library/nginx:1.25", "docker.io", "library/nginx", "1.25"),
        ("index.docker.io/nginx", "docker.io", "library/nginx", "latest"),
        ("localhost/a", "localhost", "a", "latest"),
        ("localhost:5000/a/b", "localhost:5000", "a/b", "latest"),
        ("ghcr.io/org/team/app:v1.2.3", "ghcr.io", "org/team/app", "v1.2.3"),
        ("[::1]:5000/x:t", "[::1]:5000", "x", "t"),
        ("Registry.Example.com/a:b", "Registry.Example.com", "a", "b"),
    ],
)
def test_docker_defaults_are_applied(text: str, registry: str, repository: str, tag: str) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, None)


def test_nginx_short_name_means_docker_hub_library() -> None:
    assert str(Reference.parse("nginx:1.25")) == "docker.io/library/nginx:1.25"


def test_legacy_index_docker_io_is_normalised_to_docker_io() -> None:
    assert Reference.parse("index.docker.io/library/busybox").registry == "docker.io"


def test_port_colon_is_not_mistaken_for_a_tag() -> None:
    ref = Reference.parse("localhost:5000/a/b", default_tag=False)
    assert ref.registry == "localhost:5000"
    assert ref.repository == "a/b"
    assert ref.tag is None


def test_loopback_ip_with_port_and_digest() -> None:
    ref = Reference.parse(f"127.0.0.1:5000/x@{DIGEST}")
    assert ref.registry == "127.0.0.1:5000"
    assert ref.repository == "x"
    assert ref.tag is None  # a digest pins the content; no default tag is invented
    assert ref.digest == Digest("sha256", HEX)


def test_tag_and_digest_together_are_both_kept() -> None:
    ref = Reference.parse(f"example.com/app:1.0@{DIGEST}")
    assert ref.tag == "1.0"
    assert ref.digest == Digest.parse(DIGEST)
    assert str(ref) == f"example.com/app:1.0@{DIGEST}"


def test_default_tag_can_be_left_off_for_targets() -> None:
    assert Reference.parse("example.com/app", default_tag=False).tag is None


@pytest.mark.parametrize(
    "text",
    [
        "docker.io/library/nginx:1.25",
        "localhost:5000/a/b:latest",
        f"127.0.0.1:5000/x@{DIGEST}",
        "[::1]:5000/x:t",
        f"example.com/a/b:c@{DIGEST}",
        "my-registry.local:443/a__b/c-d/e.f:v_1.2-3",
    ],
)
def test_canonical_string_round_trips(text: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == text
    assert Reference.parse(str(ref)) == ref


def test_with_tag_refuses_a_bad_tag() -> None:
    ref = Reference.parse("example.com/a:b")
    assert ref.with_tag("c").tag == "c"
    with pytest.raises(ReferenceFormatError):
        ref.with_tag("-bad")


# -- what must be refused ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Nginx",
        "nginx/Ubuntu",
        "example.com/Org/app:1",
        "localhost:5000/A",
    ],
)
def test_uppercase_repository_is_refused(text: str) -> None:
    with pytest.raises(ReferenceFormatError, match="lowercase"):
        Reference.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "nginx:",
        "nginx:-leading-dash",
        "nginx:.leading-dot",
        "nginx:has space",
        "nginx:a/b",
        "nginx:tag+plus",
        "nginx:a:b",
    ],
)
def test_bad_tag_is_refused(text: str) -> None:
    with pytest.raises(ReferenceFormatError):
        Reference.parse(text)


def test_tag_of_128_characters_is_the_longest_accepted() -> None:
    assert Reference.parse("nginx:" + "a" * 128).tag == "a" * 128


def test_tag_longer_than_128_characters_is_refused() -> None:
    with pytest.raises(ReferenceFormatError, match="bad tag"):
        Reference.parse("nginx:" + "a" * 129)


@pytest.mark.parametrize("tag", ["café", "版本", "\u0661\u0662", "v1\u00a0"])
def test_non_ascii_tag_is_refused(tag: str) -> None:
    # distribution's [\w] is ASCII ([A-Za-z0-9_]); a registry would refuse these tags.
    assert not is_valid_tag(tag)
    with pytest.raises(ReferenceFormatError):
        Reference.parse(f"example.com/app:{tag}")


def test_name_of_255_characters_is_the_longest_accepted() -> None:
    name = "example.com/" + "a" * (255 - len("example.com/"))
    assert Reference.parse(name).name == name


def test_name_longer_than_255_characters_is_refused() -> None:
    name = "example.com/" + "a" * (256 - len("example.com/"))
    with pytest.raises(ReferenceFormatError, match="longer than 255"):
        Reference.parse(name + ":t")


def test_name_length_counts_the_implied_docker_hub_prefix() -> None:
    # "docker.io/library/" is part of the name a registry sees.
    short = "a" * (255 - len("docker.io/library/"))
    assert Reference.parse(short).repository == f"library/{short}"
    with pytest.raises(ReferenceFormatError):
        Reference.parse(short + "a")


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + HEX[:-1],
        "sha256:" + HEX + "0",
        "sha256:" + HEX.upper(),
        "sha512:" + HEX,
        "md5:" + "0" * 32,
        "sha1:" + "0" * 40,
        "sha256",
        "sha256:",
        ":" + HEX,
    ],
)
def test_digest_of_wrong_length_or_algorithm_is_refused(digest: str) -> None:
    with pytest.raises(ReferenceFormatError):
        Reference.parse(f"example.com/app@{digest}")


@pytest.mark.parametrize(
    "text",
    [
        "",
        " nginx",
        "nginx ",
        "example.com//app",
        "example.com/app/",
        "/app",
        "example.com/-app",
        "example.com/app-",
        "example.com/a..b",
        "exa_mple.com/app",
        "-example.com/app",
        "[::1/app",
        "example.com:port/app",
        "app@",
    ],
)
def test_malformed_reference_is_refused(text: str) -> None:
    with pytest.raises(ReferenceFormatError):
        Reference.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "nginx\n:1.25",
        "example.com\n/app:1",
        f"example.com/app\n@{DIGEST}",
        "example.com/app:v1\n@" + DIGEST,
    ],
)
def test_embedded_newline_is_refused(text: str) -> None:
    # A name carrying a newline could forge lines in logs, lock files and HTTP paths.
    with pytest.raises(ReferenceFormatError):
        Reference.parse(text)


def test_reference_errors_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        Reference.parse("UPPER")


# -- property: every valid reference survives str() -----------------------------------

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--"])
_path_component = st.builds(
    lambda first, rest: first + "".join(s + c for s, c in rest),
    _alnum,
    st.lists(st.tuples(_separator, _alnum), max_size=2),
)
_domain_label = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_domain = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", _domain_label, _domain_label),
    st.just("localhost"),
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", *[st.integers(0, 255)] * 4),
    st.sampled_from(["[::1]", "[fe80::1]", "[2001:db8::42]"]),
).filter(lambda d: d not in ("docker.io", "index.docker.io"))
_port = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.one_of(
    st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda h: f"sha256:{h}"),
    st.from_regex(r"[0-9a-f]{128}", fullmatch=True).map(lambda h: f"sha512:{h}"),
)


@st.composite
def _references(draw: st.DrawFn) -> str:
    domain = draw(_domain) + draw(_port)
    path = "/".join(draw(st.lists(_path_component, min_size=1, max_size=3)))
    tag = draw(st.one_of(st.none(), _tag))
    digest = draw(st.one_of(st.none(), _digest))
    if tag is None and digest is None:
        tag = draw(_tag)
    text = f"{domain}/{path}"
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    return text


@given(_references())
def test_generated_valid_references_round_trip(text: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == text
    assert Reference.parse(str(ref)) == ref
