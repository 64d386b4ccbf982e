"""``--set key=value``: change one field of an experiment from the command line.

Why ``--set`` rather than Hydra-style bare ``key=value`` arguments: every command that reads an
experiment already takes positional arguments (``compare EXP A B``), and a bare ``x=y`` would be
ambiguous next to them; ``--set`` is explicit, repeatable and completes like any flag. The value is
read as YAML reads it (``3`` -> int, ``[0, 1]`` -> list, ``null``), applied to the file's mapping
before validation, so an override is validated, keyed and recorded exactly as if it were in the file.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from harness.experiment.errors import ConfigError

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(key: str) -> list[str | int]:
    """``datasets[0].root`` or ``datasets.0.root`` -> ``["datasets", 0, "root"]``."""
    parts: list[str | int] = []
    for name, index in _PART.findall(key):
        parts.append(int(index) if index else int(name) if name.isdigit() else name)
    if not parts or "".join(str(p) for p in parts) == "" or ".." in key or key.startswith("."):
        raise ConfigError(f"--set {key}", "expected a dotted key such as training.epochs")
    return parts


def parse_override(text: str) -> tuple[str, list[str | int], Any]:
    """``training.epochs=3`` -> (its text, its path, 3)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}", f"value {value!r} is not valid YAML ({err})") from None
    return key.strip(), parse_path(key.strip()), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The experiment's mapping with each ``KEY=VALUE`` set in turn (later ones win)."""
    for text in overrides:
        key, path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            following = path[i + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or not 0 <= part < len(node):
                    raise ConfigError(f"--set {key}", f"no item {part} here (the list has {_length(node)})")
                node = node[part]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}", f"{part!r} is inside a value that is not a mapping")
            if node.get(part) is None:  # a missing section: created, then validated like the file
                node[part] = [] if isinstance(following, int) else {}
            node = node[part]
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or not 0 <= last < len(node):
                raise ConfigError(f"--set {key}", f"no item {last} here (the list has {_length(node)})")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {key}", "its parent is not a mapping")
    return data


def _length(node: Any) -> str:
    return f"{len(node)} items" if isinstance(node, list) else "no items: it is not a list"


def _dotted(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def names_key(override: str, key: str, unknown: bool = False) -> bool:
    """Whether the override ``override`` (its KEY, ``datasets.0.root`` spelled either way) set ``key``
    or a section holding it; with ``unknown`` (``key`` is an unknown key) also whether it created
    ``key``: ``trainin.epochs`` made the section ``trainin``, so the unknown ``trainin`` is its doing."""
    spelled = _dotted(parse_path(override.strip()))
    pairs = [(key, spelled), (spelled, key)] if unknown else [(key, spelled)]
    return any(
        longer == shorter or longer.startswith(shorter + ".") or longer.startswith(shorter + "[")
        for longer, shorter in pairs
    )


def nearest(name: object, allowed: list[str]) -> str | None:
    """The allowed key nearest a misspelt one (difflib's ratio 0.6 or more), for 'did you mean'."""
    close = difflib.get_close_matches(str(name), allowed, n=1)
    return close[0] if close else None
