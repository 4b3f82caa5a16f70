"""Bundle config files: YAML, checked against schemas/bundle-config.schema.json."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bundler.adapters.yamlbounds import UniqueKeySafeLoader
from bundler.errors import ConfigError, NotFoundError
from bundler.model.spec import BundleSpec, ExtraImage, ImageSourceSpec

MAX_CONFIG_BYTES = 1024 * 1024


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` shipped in ``bundler.schemas`` (a copy of ``schemas/NAME``)."""
    text = resources.files("bundler.schemas").joinpath(name).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _where(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "(top level)"


def load_checked_yaml(path: Path, what: str, schema: str) -> Any:
    """A bounded YAML file (safe_load only, no key twice in a mapping), valid against ``schema``.

    Otherwise a ConfigError naming the file and the first field that is wrong.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = yaml.load(raw, Loader=UniqueKeySafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        detail = f": {problem}" if problem else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}{detail}") from None
    validator = jsonschema.Draft202012Validator(load_schema(schema))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"{what} {path}: {_where(errors[0])}: {errors[0].message}")
    return doc


def load_bundle_config(path: Path) -> BundleSpec:
    """Read a bundle config file into a BundleSpec; paths in it are relative to its directory.

    ConfigError for a file that is missing, unparsable, or not valid against the schema.
    """
    doc = load_checked_yaml(path, "bundle config", "bundle-config.schema.json")
    base = path.absolute().parent  # helm runs elsewhere: its -f paths must not be relative
    spec = BundleSpec(
        name=doc["metadata"]["name"],
        version=doc["metadata"].get("version"),
        annotations=dict(doc["metadata"].get("annotations") or {}),
        chart_path=(base / doc["chart"]["path"]) if "path" in doc["chart"] else None,
        chart_ref=doc["chart"].get("ref"),
        values_files=[base / v for v in doc.get("values", [])],
        images=[
            ExtraImage(i["ref"], tuple(i.get("valuePaths", []))) for i in doc.get("images", [])
        ],
        value_paths=list(doc.get("valuePaths", [])),
        platforms=list(doc.get("platforms", [])),
        upstream=bool(doc.get("upstream", True)),
        allow_missing=list(doc.get("allowMissing", [])),
        set_values=list(doc.get("set", [])),
        set_strings=list(doc.get("setString", [])),
        kube_version=doc.get("kubeVersion"),
        api_versions=list(doc.get("apiVersions", [])),
        include_disabled=bool(doc.get("includeDisabled", False)),
        skip_tests=bool(doc.get("skipTests", False)),
        allow_missing_platforms=bool(doc.get("allowMissingPlatforms", False)),
    )
    for source in doc.get("sources", []):
        if "oci" in source:
            spec.sources.append(ImageSourceSpec("oci", path=base / source["oci"]))
        elif "dockerArchive" in source:
            archive = base / source["dockerArchive"]
            spec.sources.append(ImageSourceSpec("docker-archive", path=archive))
        else:
            mirror = source["mirror"]
            spec.sources.append(
                ImageSourceSpec("mirror", mirror_from=mirror["from"], mirror_to=mirror["to"])
            )
    return spec
