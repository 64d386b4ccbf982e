"""Reading an experiment file: strict YAML (a duplicated key is an error, not last-wins), ``--set``
overrides, one validation of the whole file, and every problem as a :class:`ConfigError` naming the
dotted key, what is allowed (with the nearest key for a typo), and the file and line or the override
that wrote it. The schema itself is :mod:`harness.experiment.config`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.experiment.config import ExperimentConfig, _LocatedError, _message
from harness.experiment.errors import ConfigError, ConfigErrors
from harness.experiment.overrides import apply_overrides, names_key, nearest


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicated keys and remembers the line of every key."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    lines: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigError(
                str(key),
                f"duplicated key (first on line {lines[key]}, again on line {key_node.start_mark.line + 1}); "
                "each key may appear once",
                f"{loader.name}:{key_node.start_mark.line + 1}",
            )
        out[key] = loader.construct_object(value_node, deep=True)
        lines[key] = key_node.start_mark.line + 1
    loader.lines[id(out)] = (out, lines)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> tuple[Any, dict]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:  # e.g. a Latin-1 byte pasted into a description
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            "experiment",
            f"not UTF-8: byte 0x{raw[err.start]:02x} at offset {err.start} (line {line}) cannot be "
            "decoded; save the file as UTF-8",
            f"{path}:{line}",
        ) from None
    loader = _StrictLoader(text)
    loader.name = str(path)
    loader.lines = {}
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError("experiment", f"not valid YAML: {getattr(err, 'problem', err)}", where) from err
    finally:
        loader.dispose()
    return data, loader.lines


def _line_of(data: Any, loc: tuple, lines: dict) -> int | None:
    """The line of the deepest key of ``loc`` that the YAML file spelled out."""
    line = None
    node = data
    for part in loc:
        if isinstance(node, dict) and id(node) in lines:
            _, keys = lines[id(node)]
            if part in keys:
                line = keys[part]
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
    return line


def dotted(loc: tuple) -> str:
    """``("datasets", 0, "options", "bogus")`` -> ``datasets[0].options.bogus``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "experiment"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at the parent of ``loc``, for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
        else:
            return []
    return list(getattr(current, "model_fields", {}))


def parse_experiment(
    data: Any,
    source: str | None = None,
    lines: dict | None = None,
    overrides: list[str] | None = None,
    base_dir: Path | None = None,
) -> ExperimentConfig:
    """Validate a mapping as an experiment; every problem found becomes a ConfigError naming its key
    (one :class:`ConfigErrors` when there are several). ``overrides`` (``KEY=VALUE``) are set first;
    relative folders the file names (split files) are read from ``base_dir`` (default: here)."""
    if not isinstance(data, dict):
        raise ConfigError("experiment", "the file must hold a mapping of keys", source)
    overrides = list(overrides or [])
    if overrides:
        data = apply_overrides(copy.deepcopy(data), overrides)
    try:
        spec = ExperimentConfig.model_validate(data, context={"base_dir": base_dir or Path.cwd()})
    except ValidationError as err:
        problems = [_problem(error, data, source, lines or {}, overrides) for error in err.errors()]
        raise (problems[0] if len(problems) == 1 else ConfigErrors(problems)) from None
    spec._overrides = overrides
    return spec


def _problem(error: Any, data: Any, source: str | None, lines: dict, overrides: list[str]) -> ConfigError:
    """One pydantic error as a ConfigError: the dotted key, what is wrong, and where it was written."""
    loc = tuple(error["loc"])
    message = _message(error)
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _LocatedError):
        loc, message = loc + cause.loc, str(cause)
    unknown = error["type"] == "extra_forbidden"
    if unknown:
        allowed = _allowed_keys(ExperimentConfig, loc)
        near = nearest(loc[-1], allowed)
        message += f" (did you mean {dotted((*loc[:-1], near))}?)" if near else ""
        message += f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
    key = dotted(loc)
    given = [o for o in overrides if names_key(o.partition("=")[0], key, unknown)]
    if given:
        return ConfigError(key, message, f"--set {given[-1]}")
    line = _line_of(data, loc, lines)
    return ConfigError(key, message, f"{source}:{line}" if source and line else source)


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate an experiment file (with ``--set`` overrides); every problem is a ConfigError
    naming the key (exit 2)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("experiment", f"{path} is a directory; give the experiment's YAML file")
    if not path.is_file():
        raise ConfigError("experiment", f"no such file: {path}")
    data, lines = _read_yaml(path)
    spec = parse_experiment(data, str(path), lines, overrides, base_dir=path.resolve().parent)
    spec._base_dir = path.resolve().parent
    return spec
