"""Strict configuration: params.yaml -> frozen dataclasses, one per stage.

Field names equal params.yaml keys. `from_dict` rejects unknown and missing keys and
checks types, naming the offending key path (``scales.tiny.data.root``). The JSON
schema in workflow/schemas/ is generated from these dataclasses (`maetok schema`), so
the two cannot drift apart; a test checks the committed copy is current.

Variants are partial overrides of the active scale's block; `Params.tokenizer` and
`Params.generator` build the full config of one variant, which is what a job receives.

The pieces: maetok/config_base.py reads typed YAML (no project keys), maetok/config_stages.py
holds the dataclass of each stage, and this module the top level (`Params`), the variant
merging, `load_params` and the schema. Import the names from here (`from maetok import config as C`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Literal

from maetok.config_base import (
    ConfigError,
    check_yaml_files,
    deep_merge,
    doc,
    from_dict,
    key_path,
    read_yaml,
    to_dict,
)
from maetok.config_stages import (
    SWEEP_GUIDANCE,
    AnalysisConfig,
    AuxConfig,
    AuxLossConfig,
    CfgSweepConfig,
    DataConfig,
    EvaluationConfig,
    FinetuneConfig,
    GeneratorConfig,
    HiresConfig,
    MaskConfig,
    NetworksConfig,
    NodesConfig,
    OptimConfig,
    ReleasedWeightsConfig,
    SamplingConfig,
    ScaleConfig,
    StandinsConfig,
    TokenizerConfig,
    TokenizerLossConfig,
    TokenizerModelConfig,
    TransportConfig,
    sweep_point,
)
from maetok.models.choices import TOKENIZER_PATCH_SIZES

__all__ = [
    "DEFAULT_PARAMS", "REPO_ROOT", "RESOLUTIONS", "SCALES", "SCHEMA_PATH", "SWEEP_GUIDANCE", "AnalysisConfig",
    "AuxConfig", "AuxLossConfig", "CfgSweepConfig", "ConfigError", "DataConfig", "EvaluationConfig",
    "FinetuneConfig", "GeneratorConfig", "HiresConfig", "MaskConfig", "NetworksConfig", "NodesConfig",
    "OptimConfig", "Params", "ReleasedWeightsConfig", "SamplingConfig", "ScaleConfig", "StandinsConfig",
    "TokenizerConfig", "TokenizerLossConfig", "TokenizerModelConfig", "TransportConfig", "check_yaml_files",
    "deep_merge", "doc", "from_dict", "json_schema", "load_params", "read_yaml", "sweep_point", "to_dict",
    "write_schema",
]

SCALES = ("tiny", "paper")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.json"


@dataclass(frozen=True)
class Params:
    scale: Literal[*SCALES] = doc("Active scale: which block of `scales` the pipeline runs.")
    seed: int = doc("Global seed; stages derive theirs as seed * world_size + rank.")
    scales: dict[str, ScaleConfig] = doc("Base settings per scale; must define exactly `tiny` and `paper`.")
    tokenizer_variants: dict[str, dict] = doc(
        "Named tokenizers: partial overrides of `scales.<scale>.tokenizer` (+ `by_scale.<scale>` overrides, "
        "a `description`, `resolution`: `base` (data.image_size, the default) or `hires` (hires.image_size), "
        "and `weights`: a released file imported instead of training, at paper scale).")
    generator_variants: dict[str, dict] = doc(
        "Named generators: partial overrides of `scales.<scale>.generator` (+ `by_scale`, `description`, "
        "`sampling`: partial overrides of `scales.<scale>.sampling` for this generator's samples, and "
        "`weights`: a released file imported instead of training, at paper scale).")

    def check(self, path: str) -> None:
        if set(self.scales) != set(SCALES):
            raise ConfigError(f"{key_path(path, 'scales')}: must define exactly {list(SCALES)}, "
                              f"found {sorted(self.scales)}")
        for kind in ("tokenizer", "generator"):
            for name in getattr(self, f"{kind}_variants"):
                self.released(kind, name)
        for scale in SCALES:
            for name in self.tokenizer_variants:
                self._check_patch_grid(name, scale)
            for name in self.generator_variants:
                self.generator(name, scale)
                n, classes = self.sampling(name, scale).num_samples, self.scales[scale].data.num_classes
                if n % classes:
                    raise ConfigError(f"generator_variants.{name}.sampling.num_samples: {n} is not divisible by "
                                      f"scales.{scale}.data.num_classes = {classes}: use a multiple of {classes}")

    def _check_patch_grid(self, tokenizer: str, scale: str) -> None:
        """Every image size tokenizer variant `tokenizer` trains on at `scale` splits into whole patches
        (else its first job would stop on it)."""
        cfg, data = self.tokenizer(tokenizer, scale), self.tokenizer_data(tokenizer, scale)
        patch = TOKENIZER_PATCH_SIZES.get(cfg.model.size)
        if patch is None:
            return
        raw = self.tokenizer_variants[tokenizer]
        mixed = (f"tokenizer_variants.{tokenizer}.by_scale.{scale}.mixed_resolution"
                 if "mixed_resolution" in ((raw.get("by_scale") or {}).get(scale) or {})
                 else f"tokenizer_variants.{tokenizer}.mixed_resolution" if "mixed_resolution" in raw
                 else f"scales.{scale}.tokenizer.mixed_resolution")
        key = f"scales.{scale}.{'data' if self.resolution(tokenizer) == 'base' else 'hires'}.image_size"
        sizes = [(key, data.image_size)] + [(mixed, s) for s in cfg.mixed_resolution]
        for where, size in sizes:
            if size % patch:
                raise ConfigError(f"{where}: {size} px is not divisible by the patch size {patch} of "
                                  f"{cfg.model.size} (the model.size of tokenizer variant {tokenizer!r} at scale "
                                  f"{scale}): use a multiple of {patch}, or a model.size whose patch divides {size}")

    def generator(self, variant: str, scale: str | None = None) -> GeneratorConfig:
        """The merged config of generator `variant` at `scale` (default: the active one)."""
        return _merge_variant(self, "generator", self.generator_variants, GeneratorConfig, variant, scale)

    def sampling(self, generator: str, scale: str | None = None) -> SamplingConfig:
        """How generator variant `generator` is sampled at `scale`: `scales.<scale>.sampling` with the
        variant's `sampling` overrides (e.g. LightningDiT's own CFG scale, paper App. C.2)."""
        scale = scale or self.scale
        raw = self.generator_variants.get(generator)
        if raw is None:
            raise ConfigError(f"unknown generator variant {generator!r}; defined in params.yaml "
                              f"`generator_variants`: {', '.join(self.generator_variants)}")
        by_scale = (raw.get("by_scale") or {}).get(scale) or {}
        override = deep_merge(raw.get("sampling") or {}, by_scale.get("sampling") or {})
        if not override:
            return self.scales[scale].sampling
        merged = deep_merge(to_dict(self.scales[scale].sampling), override)
        return from_dict(SamplingConfig, merged, f"generator_variants.{generator}.sampling")

    def job_sampling(self, generator: str, guidance: str, scale: str | None = None) -> SamplingConfig:
        """The sampling config of one sampling job, holding only what its samples depend on, so that
        editing a setting reruns exactly the jobs it changes: `nocfg` keeps the base CFG fields (it
        ignores them); a Table 12 point "cfg<scale>_<low>-<high>" gets its own scale and interval and
        `cfg_sweep.num_samples` samples; `cfg` is the generator's `sampling` (see `sampling`)."""
        s, base = self.sampling(generator, scale), self.scales[scale or self.scale]
        if guidance == "nocfg":
            return dataclasses.replace(s, cfg_scale=base.sampling.cfg_scale,
                                       cfg_interval_low=base.sampling.cfg_interval_low,
                                       cfg_interval_high=base.sampling.cfg_interval_high)
        point = sweep_point(guidance)
        if point:
            scale_, low, high = point
            return dataclasses.replace(s, cfg_scale=scale_, cfg_interval_low=low, cfg_interval_high=high,
                                       num_samples=base.cfg_sweep.num_samples)
        return s

    def tokenizer(self, variant: str, scale: str | None = None) -> TokenizerConfig:
        """The merged config of tokenizer `variant` at `scale` (default: the active one)."""
        return _merge_variant(self, "tokenizer", self.tokenizer_variants, TokenizerConfig, variant, scale)

    def released(self, kind: str, variant: str) -> ReleasedWeightsConfig | None:
        """The released weights that `kind` ("tokenizer" or "generator") variant `variant` imports instead of
        being trained (its `weights` key), or None for a trained variant. The workflow uses them at paper
        scale only (docs/official_weights.md)."""
        variants = getattr(self, f"{kind}_variants")
        if variant not in variants:
            raise ConfigError(f"unknown {kind} variant {variant!r}; defined in params.yaml `{kind}_variants`: "
                              f"{', '.join(variants)}")
        raw = variants[variant].get("weights")
        if raw is None:
            return None
        where = f"{kind}_variants.{variant}.weights"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping (path, sha256, ...), got {type(raw).__name__} {raw!r}")
        w = from_dict(ReleasedWeightsConfig, raw, where)
        if kind == "tokenizer":
            extra = [k for k in ("tokenizer", "latent_mean", "latent_std") if getattr(w, k) is not None]
            if extra:
                raise ConfigError(f"{where}.{extra[0]}: only a generator's weights name a tokenizer or a latent "
                                  "normalisation; remove it")
        else:
            if w.config is not None:
                raise ConfigError(f"{where}.config: the config.json is the tokenizer's (tokenizer_variants.<name>."
                                  "weights.config), where the generator import reads its vq_mean / vq_std; remove it")
            if w.tokenizer is None:
                raise ConfigError(f"{where}.tokenizer: missing: name the tokenizer variant whose latents the released "
                                  "generator was trained on (e.g. maetok_release)")
            if w.tokenizer not in self.tokenizer_variants:
                raise ConfigError(f"{where}.tokenizer: {w.tokenizer!r} is not a tokenizer variant; defined in "
                                  f"params.yaml `tokenizer_variants`: {', '.join(self.tokenizer_variants)}")
        return w

    def resolution(self, tokenizer: str) -> str:
        """`base` or `hires`: which data tokenizer variant `tokenizer` trains and is evaluated on."""
        if tokenizer not in self.tokenizer_variants:
            raise ConfigError(f"unknown tokenizer variant {tokenizer!r}; defined in params.yaml "
                              f"`tokenizer_variants`: {', '.join(self.tokenizer_variants)}")
        res = self.tokenizer_variants[tokenizer].get("resolution", "base")
        if res not in RESOLUTIONS:
            raise ConfigError(f"tokenizer_variants.{tokenizer}.resolution: {res!r} is not one of {list(RESOLUTIONS)}")
        return res

    def tokenizer_data(self, tokenizer: str, scale: str | None = None) -> DataConfig:
        """The data settings of tokenizer variant `tokenizer`: `data`, at `hires.image_size` for `hires`."""
        s = self.scales[scale or self.scale]
        if self.resolution(tokenizer) == "base":
            return s.data
        return dataclasses.replace(s.data, image_size=s.hires.image_size)

    def same_runs(self, kind: str, scale: str | None = None) -> dict[str, str]:
        """{variant: the first variant (params.yaml order) that is the same run at `scale`} of the
        `kind` "tokenizer" (same merged config and data) or "generator" (same config and sampling); a variant
        that imports released weights is the same run only as one importing the same file the same way.
        Variants that differ only at another scale merge here: at tiny, maetok_main is maetok (it
        trains longer only at paper scale), so the workflow trains one tokenizer for both."""
        scale = scale or self.scale
        cache = self.__dict__.setdefault("_same_runs_cache", {})  # merging every variant is slow; Params is frozen
        if (kind, scale) not in cache:
            cache[kind, scale] = self._same_runs(kind, scale)
        return dict(cache[kind, scale])

    def _same_runs(self, kind: str, scale: str) -> dict[str, str]:
        if kind == "tokenizer":
            names = list(self.tokenizer_variants)
            keys = [(self.tokenizer(v, scale), self.tokenizer_data(v, scale), self.released(kind, v)) for v in names]
        elif kind == "generator":
            names = list(self.generator_variants)
            keys = [(self.generator(v, scale), self.sampling(v, scale), self.released(kind, v)) for v in names]
        else:
            raise ValueError(f"kind must be 'tokenizer' or 'generator', not {kind!r}")
        return {v: names[keys.index(k)] for v, k in zip(names, keys, strict=True)}

    @property
    def active(self) -> ScaleConfig:
        return self.scales[self.scale]


VARIANT_EXTRA_KEYS = ("description", "by_scale")
# Keys of a variant that are not part of its block's config: generator variants carry their
# sampling overrides (Params.sampling), which must not change the generator's training config.
VARIANT_SIDE_KEYS = {"tokenizer": ("resolution", "weights"), "generator": ("sampling", "weights")}
RESOLUTIONS = ("base", "hires")


def _merge_variant(params: Params, block: str, variants: dict, cls: type, name: str, scale: str | None):
    scale = scale or params.scale
    if name not in variants:
        raise ConfigError(f"unknown {block} variant {name!r}; defined in params.yaml `{block}_variants`: "
                          f"{', '.join(variants)}")
    side = VARIANT_SIDE_KEYS[block]
    description = variants[name].get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{block}_variants.{name}.description: expected a string, got {type(description).__name__} "
                          f"{description!r}: quote it (description: \"...\")")
    override = {k: v for k, v in variants[name].items() if k not in VARIANT_EXTRA_KEYS + side}
    by_scale = variants[name].get("by_scale") or {}
    if not isinstance(by_scale, dict) or set(by_scale) - set(SCALES):
        raise ConfigError(f"{block}_variants.{name}.by_scale: keys must be among {list(SCALES)}")
    base = to_dict(getattr(params.scales[scale], block))
    for s_name, overrides in by_scale.items():
        if block == "tokenizer" and "resolution" in (overrides or {}):
            raise ConfigError(f"{block}_variants.{name}.by_scale.{s_name}.resolution: `resolution` is set per "
                              "variant (a variant's data), not per scale; move it up to the variant")
        if "weights" in (overrides or {}):
            raise ConfigError(f"{block}_variants.{name}.by_scale.{s_name}.weights: `weights` is set per variant "
                              "(the workflow imports released weights at paper scale only); move it up to the variant")
    at_scale = {k: v for k, v in (by_scale.get(scale) or {}).items() if k not in side}
    merged = deep_merge(deep_merge(base, override), at_scale)
    return from_dict(cls, merged, f"{block}_variants.{name}" + (f" (at scale {scale})" if by_scale else ""))


# --------------------------------------------------------------------------- loading
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
            if f.metadata.get("choices"):
                props[f.name]["enum"] = list(f.metadata["choices"])
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
    return {"type": {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
                     dict: "object"}[tp]}


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
    for block, cls in (("tokenizer", TokenizerConfig), ("generator", GeneratorConfig)):
        variant = _schema_for(cls, partial=True)
        variant["properties"]["description"] = {"description": "What this variant is and which tables use it.",
                                                "type": "string"}
        at_scale = _schema_for(cls, partial=True)
        if block == "tokenizer":
            variant["properties"]["resolution"] = {
                "description": "`base` (data.image_size) or `hires` (hires.image_size, e.g. 512 for Tables 3, 4, 11).",
                "enum": list(RESOLUTIONS)}
        if block == "generator":
            sampling = {"description": "Overrides of `scales.<scale>.sampling` for this generator's samples.",
                        **_schema_for(SamplingConfig, partial=True)}
            variant["properties"]["sampling"] = sampling
            at_scale["properties"]["sampling"] = sampling
        weights = _schema_for(ReleasedWeightsConfig)
        weights["required"] = [f.name for f in dataclasses.fields(ReleasedWeightsConfig)
                               if f.default is MISSING and f.default_factory is MISSING]
        variant["properties"]["weights"] = {
            "description": "A released file imported instead of training this variant, at paper scale "
                           "(docs/official_weights.md).", **weights}
        variant["properties"]["by_scale"] = {
            "description": "Overrides that apply only at one scale.", "type": "object", "additionalProperties": False,
            "properties": {s: {"description": f"Overrides at `{s}`.", **at_scale} for s in SCALES}}
        schema["properties"][f"{block}_variants"]["additionalProperties"] = variant
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "MAETok reproduction params.yaml", **schema}


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_schema(), indent=2) + "\n")
    return path
