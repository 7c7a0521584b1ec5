"""Config files as data teams write them: one strict pydantic base for every kind (a source, an exchange, an
agency, an agreement) and one YAML loader whose errors name the file and the field."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ndc.errors import ConfigError
from ndc.identifiers import is_identifier
from ndc.settings import CRON


def check_identifier(value: str) -> str:
    if not is_identifier(value):
        raise ValueError("expected a lower-case SQL identifier (letters, digits, _; at most 63 characters)")
    return value


class StrictConfig(BaseModel):
    """Every config file's model: unknown fields are errors, and a loaded config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _ConfigLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when installed
    """Safe YAML without implicit timestamps: dates reach pydantic as text, so a bad one is named by field."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping_without_repeats(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    """A mapping whose keys are each given once: YAML would keep the last of a repeated key silently (say, a second
    ``row_filter: {}`` that drops the first's filter), so a repeat is an error naming both lines."""
    loader.flatten_mapping(node)
    first: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in first:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"the key {key!r} is given twice (first on line {first[key] + 1}): each key once", key_node.start_mark)
        first[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_ConfigLoader.add_constructor("tag:yaml.org,2002:map", _mapping_without_repeats)


def _format_errors(path: Path, exc: ValidationError, kind: str) -> str:
    lines = [f"{path}: invalid {kind} file"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        given = err.get("input")
        shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
        lines.append(f"  - field '{field}': {err['msg']}{shown}")
    return "\n".join(lines)


# Parsed configs by file and content: a file whose bytes did not change is not parsed or validated again (the
# operator page, the conform plan and `ndc sources validate` read thousands of them). The key holds the model's
# schema, so a changed model validates every file again.
_parsed: dict[tuple[str, str], tuple[str, BaseModel]] = {}  # (file, model schema) -> (content hash, config)
_stat: dict[str, tuple[tuple[int, int], str]] = {}


def _content_key(path: Path) -> str:
    info = path.stat()
    signature = (info.st_mtime_ns, info.st_size)
    known = _stat.get(str(path))
    if known and known[0] == signature:
        return known[1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _stat[str(path)] = (signature, digest)
    return digest


def _schema_key(model: type[BaseModel]) -> str:
    key = getattr(model, "__ndc_schema_key__", None)
    if key is None or key[0] is not model:
        digest = hashlib.sha256(json.dumps(model.model_json_schema(), sort_keys=True, default=str).encode()).hexdigest()
        key = (model, digest[:16])
        model.__ndc_schema_key__ = key
    return key[1]


def load_config(path: Path, model: type[BaseModel], kind: str, name_field: str | None = "name") -> BaseModel:
    """One YAML config file (a source, an exchange, an agency, an agreement) validated by ``model``; every error
    names the file and the field. ``name_field`` must equal the file name. Cached by file and content hash."""
    try:
        key, digest = (str(path), _schema_key(model)), _content_key(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    known = _parsed.get(key)
    if known is None or known[0] != digest:
        known = _parsed[key] = (digest, _load_config(path, model, kind, name_field))  # one entry per file
    return known[1]


def _load_config(path: Path, model: type[BaseModel], kind: str, name_field: str | None) -> BaseModel:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    try:
        config = model.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc, kind)) from None
    if name_field and getattr(config, name_field) != path.stem:
        raise ConfigError(f"{path}: field '{name_field}': {getattr(config, name_field)!r} must match the file name "
                          f"{path.stem!r}")
    return config


def load_all(directory: Path, load, problems: list[str] | None = None) -> list:
    """``load`` of every ``*.yml`` in ``directory`` (none if it does not exist). Every invalid file is named: in
    one ConfigError, or appended to ``problems`` when the caller checks more before raising."""
    return load_paths(sorted(directory.glob("*.yml")), load, problems)


def load_paths(paths: list[Path], load, problems: list[str] | None = None) -> list:
    """``load`` of every path; every invalid file is named (see :func:`load_all`)."""
    found, collected = [], [] if problems is None else problems
    for path in paths:
        try:
            found.append(load(path))
        except ConfigError as exc:
            collected.append(str(exc))
    if problems is None and collected:
        raise ConfigError("\n".join(collected))
    return found


def identifiers(values: list[str]) -> list[str]:
    """A list field of identifiers (key columns, ...): each one checked."""
    for value in values:
        check_identifier(value)
    return values


def repeated(values: list[str]) -> list[str]:
    """The values that appear more than once, sorted (a config names each table, view, ... once)."""
    return sorted({v for v in values if values.count(v) > 1})


def refuse_repeated_names(configs: list, kind: str) -> None:
    """Raise a ConfigError naming every file of a name used twice (names are unique across agency folders)."""
    by_name: dict[str, list[str]] = {}
    for config in configs:
        by_name.setdefault(config.name, []).append(str(config.path))
    twice = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    if twice:
        raise ConfigError("\n".join(f"{kind} name {name!r} is used by more than one file: {', '.join(paths)}"
                                    for name, paths in sorted(twice.items())))


def refuse_repeated(values: list[str], rule: str) -> None:
    """Raise (a validation error naming the repeats) when a name appears more than once."""
    duplicates = repeated(values)
    if duplicates:
        raise ValueError(f"{rule}; repeated: {', '.join(duplicates)}")


def cron_schedule(value: str | None) -> str | None:
    if value is not None and not CRON.match(value.strip()):
        raise ValueError("expected a cron expression ('0 2 * * *') or a preset such as '@daily'")
    return value


def non_negative_duration(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("expected a duration of zero or more (ISO 8601, e.g. PT2H)")
    return value
