"""Typed YAML: frozen dataclasses filled from params files, strictly.

`from_dict` rejects unknown and missing keys and checks types against the annotations, naming the
offending key path (``scales.tiny.data.root``); `read_yaml` refuses duplicate keys. Nothing here
knows the project's keys: the dataclasses are in maetok/config_stages.py and maetok/config.py.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A params.yaml problem; the message names the key path and the fix."""


def doc(text: str, choices: tuple | None = None, **kw) -> Any:
    """A dataclass field carrying its params.yaml description (and, for strings, allowed values)."""
    return field(metadata={"doc": text, "choices": choices}, **kw)



def key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_positive(obj: Any, path: str, *names: str) -> None:
    """ConfigError naming the key unless each field `names` of `obj` (at key path `path`) is > 0."""
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{key_path(path, name)}: must be > 0, got {getattr(obj, name)!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the type annotation `tp`; return the converted value."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, path)
    if origin is Literal:
        if value not in args or (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _convert(arg, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _convert(args[1], v, key_path(path, str(k))) for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (write floats as 1.0e-4: YAML 1.1 reads 1e-4 as a string)" if isinstance(value, str) else ""
            raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {value!r}{hint}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown/missing keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {key_path(path, unknown[0])!r}; valid keys here: {', '.join(names)}")
    fields = dataclasses.fields(cls)
    optional = {f.name for f in fields if f.default is not MISSING or f.default_factory is not MISSING}
    missing = [n for n in names if n not in data and n not in optional]
    if missing:
        raise ConfigError(f"missing key {key_path(path, missing[0])!r} "
                          f"({fields[names.index(missing[0])].metadata.get('doc', '')})")
    obj = cls(**{n: _convert(hints[n], data[n], key_path(path, n)) for n in names if n in data})
    for f in dataclasses.fields(cls):
        if f.metadata.get("choices") and getattr(obj, f.name) not in f.metadata["choices"]:
            choices = list(f.metadata["choices"])
            raise ConfigError(f"{key_path(path, f.name)}: {getattr(obj, f.name)!r} is not one of {choices}")
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Inverse of from_dict: plain JSON-able dicts/lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict update; returns a new dict (lists are replaced, not merged)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _duplicate_keys(node: yaml.Node, path: str = ""):
    """(key path, first line, repeated line) of every key written twice in one mapping of the tree."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                yield key_path(path, key), seen[key], line
            seen.setdefault(key, line)
            yield from _duplicate_keys(value, key_path(path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]")


def read_yaml(path: str | Path) -> dict:
    """A params file as a dict. Unlike `yaml.safe_load` (and Snakemake's loader), it refuses a key
    written twice in one mapping, which would otherwise keep the last value silently, and a syntax
    error names the line and column."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found (run from the repository root, or pass --params)")
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        for key, first, again in _duplicate_keys(node) if node is not None else ():
            raise ConfigError(f"{path}: duplicate key {key!r} on lines {first} and {again}: keep one of them "
                              "(YAML would silently use the last)")
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark, context = e.problem_mark or e.context_mark, ""
        if e.context and e.context_mark and e.context_mark is not mark:
            context = f" ({e.context} started at line {e.context_mark.line + 1}, column {e.context_mark.column + 1})"
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: YAML syntax error{at}: {e.problem or e.context}{context}: fix the file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())}): fix the file") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def check_yaml_files(paths) -> None:
    """Read each params file (params.yaml, --configfile overlays) as `read_yaml` does, so that Snakemake
    stops on a duplicate key or a syntax error with its line before its own loader reads the file."""
    for path in dict.fromkeys(str(p) for p in paths):
        read_yaml(path)
