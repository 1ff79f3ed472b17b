"""Strict configuration: params.yaml -> frozen dataclasses, one per stage.

Field names equal params.yaml keys. `from_dict` rejects unknown and missing keys and
checks types, naming the offending key path (``scales.tiny.data.root``). The JSON
schema in workflow/schemas/ is generated from these dataclasses (`maetok schema`), so
the two cannot drift apart; a test checks the committed copy is current.

Variants are partial overrides of the active scale's block; `merged_tokenizer` and
`merged_generator` build the full config of one variant, which is what a job receives.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SCALES = ("tiny", "paper")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.json"


class ConfigError(ValueError):
    """A params.yaml problem; the message names the key path and the fix."""


def doc(text: str, **kw) -> Any:
    """A dataclass field carrying its params.yaml description."""
    return field(metadata={"doc": text}, **kw)


# --------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["fashion_mnist", "imagefolder"] = doc(
        "Dataset reader: `fashion_mnist` (tiny scale) or `imagefolder` (ImageNet layout, paper scale).")
    root: str | None = doc(
        "Directory holding the data (IDX .gz files or an ImageFolder with train/ and val/). "
        "null: look in $MAETOK_FASHION_MNIST, then /usr/share/datasets/fashion-mnist, then download.")
    download: bool = doc("Allow downloading Fashion-MNIST from `url` when no local copy is found.")
    url: str = doc("Base URL of the Fashion-MNIST IDX files (only used when `download` is true).")
    image_size: int = doc("Side of the square training images in pixels (tiny: 32 after padding; paper: 256).")
    num_classes: int = doc("Number of class labels (Fashion-MNIST 10, ImageNet 1000).")
    hflip: bool = doc("Random horizontal flips during training (paper App. B, Tables 7-9).")

    def check(self, path: str) -> None:
        _positive(self, path, "image_size", "num_classes")


@dataclass(frozen=True)
class ScaleConfig:
    data: DataConfig = doc("Dataset settings for this scale.")


@dataclass(frozen=True)
class Params:
    scale: Literal["tiny", "paper"] = doc("Active scale: which block of `scales` the pipeline runs.")
    seed: int = doc("Global seed; stages derive theirs as seed * world_size + rank.")
    scales: dict[str, ScaleConfig] = doc("Base settings per scale; must define exactly `tiny` and `paper`.")

    def check(self, path: str) -> None:
        if set(self.scales) != set(SCALES):
            raise ConfigError(f"{_at(path, 'scales')}: must define exactly {list(SCALES)}, "
                              f"found {sorted(self.scales)}")

    @property
    def active(self) -> ScaleConfig:
        return self.scales[self.scale]


# --------------------------------------------------------------------------- loading
def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _positive(obj: Any, path: str, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{_at(path, name)}: must be > 0, got {getattr(obj, name)!r}")


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
        if value not in args:
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
        return {str(k): _convert(args[1], v, _at(path, str(k))) for k, v in value.items()}
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
        raise ConfigError(f"unknown key {_at(path, unknown[0])!r}; valid keys here: {', '.join(names)}")
    missing = [n for n in names if n not in data]
    if missing:
        raise ConfigError(f"missing key {_at(path, missing[0])!r} "
                          f"({dataclasses.fields(cls)[names.index(missing[0])].metadata.get('doc', '')})")
    obj = cls(**{n: _convert(hints[n], data[n], _at(path, n)) for n in names})
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


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found (run from the repository root, or pass --params)")
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_params(source: str | Path | dict = DEFAULT_PARAMS, overrides: dict | None = None) -> Params:
    """Load and check params (a path or an already-parsed dict, e.g. Snakemake's `config`)."""
    data = read_yaml(source) if not isinstance(source, dict) else copy.deepcopy(source)
    if overrides:
        data = deep_merge(data, overrides)
    return from_dict(Params, data)


# --------------------------------------------------------------------------- schema
def _schema_for(tp: Any, partial: bool = False) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        props = {}
        for f in dataclasses.fields(tp):
            props[f.name] = {"description": f.metadata["doc"], **_schema_for(hints[f.name], partial)}
        out = {"type": "object", "additionalProperties": False, "properties": props}
        if not partial:
            out["required"] = list(props)
        return out
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_for(a, partial) for a in args]}
    if origin is list:
        return {"type": "array", "items": _schema_for(args[0], partial)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_for(args[1], partial)}
    return {"type": {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string"}[tp]}


def json_schema() -> dict:
    """The JSON schema (draft 2020-12) of params.yaml, derived from the dataclasses."""
    schema = _schema_for(Params)
    scale_cfg = schema["properties"]["scales"]
    scale_cfg.pop("additionalProperties")
    scale_cfg["properties"] = {s: _schema_for(ScaleConfig) for s in SCALES}
    for s in SCALES:
        scale_cfg["properties"][s]["description"] = f"Base settings of the `{s}` scale."
    scale_cfg["additionalProperties"] = False
    scale_cfg["required"] = list(SCALES)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "MAETok reproduction params.yaml", **schema}


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_schema(), indent=2) + "\n")
    return path
