"""params.yaml strictness and schema <-> dataclass agreement."""

from __future__ import annotations

import copy
import dataclasses
import json
import typing

import jsonschema
import pytest
import yaml

from maetok import config as C


@pytest.fixture
def raw(repo) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_params_yaml_loads_into_frozen_dataclasses(raw):
    params = C.load_params(raw)
    assert params.scale == "tiny"
    assert params.active.data.image_size == 32
    assert params.scales["paper"].data.image_size == 256
    with pytest.raises(AttributeError):
        params.seed = 1  # frozen


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["scales"]["tiny"]["data"].update(rooot="/x"), "unknown key 'scales.tiny.data.rooot'"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["scales"]["tiny"]["data"].pop("image_size"), "missing key 'scales.tiny.data.image_size'"),
    (lambda d: d["scales"]["tiny"]["data"].update(image_size="32"), "scales.tiny.data.image_size: expected an integer"),
    (lambda d: d["scales"]["tiny"]["data"].update(hflip="yes"), "scales.tiny.data.hflip: expected true/false"),
    (lambda d: d.update(scale="huge"), "scale: 'huge' is not one of ['tiny', 'paper']"),
    (lambda d: d["scales"]["tiny"]["data"].update(dataset="cifar"), "scales.tiny.data.dataset: 'cifar' is not one of"),
    (lambda d: d["scales"]["tiny"]["data"].update(num_classes=0), "scales.tiny.data.num_classes: must be > 0"),
    (lambda d: d["scales"].pop("paper"), "scales: must define exactly ['tiny', 'paper']"),
    (lambda d: d["generator_variants"]["sit_xl"].update(sampling={"cfg_scal": 2.0}),
     "unknown key 'generator_variants.sit_xl.sampling.cfg_scal'"),
    (lambda d: d["scales"]["tiny"]["cfg_sweep"].update(num_samples=1234),
     "scales.tiny.cfg_sweep.num_samples: 1234 is not divisible"),
    (lambda d: d["tokenizer_variants"]["maetok_512"]["by_scale"]["paper"].update(resolution="hires"),
     "tokenizer_variants.maetok_512.by_scale.paper.resolution: `resolution` is set per variant"),
    (lambda d: d["generator_variants"]["sit_xl"].update(sampling={"num_samples": 1005}),
     "generator_variants.sit_xl.sampling.num_samples: 1005 is not divisible by scales.tiny.data.num_classes"),
    (lambda d: d["scales"]["tiny"]["cfg_sweep"].update(generator_step=0), "scales.tiny.cfg_sweep.generator_step"),
    (lambda d: d["tokenizer_variants"]["maetok_512"].update(resolution="4k"),
     "tokenizer_variants.maetok_512.resolution: '4k' is not one of ['base', 'hires']"),
    (lambda d: d["scales"]["paper"]["hires"].update(image_size=256),
     "scales.paper.hires.image_size: 256 must be larger than scales.paper.data.image_size = 256"),
])
def test_bad_params_name_the_key_path(raw, mutate, message):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(C.ConfigError) as e:
        C.load_params(bad)
    assert message in str(e.value)


def test_float_written_as_1e_minus_4_gets_a_hint():
    @dataclasses.dataclass(frozen=True)
    class Opt:
        lr: float = C.doc("learning rate")

    with pytest.raises(C.ConfigError, match="write floats as 1.0e-4"):
        C.from_dict(Opt, yaml.safe_load("lr: 1e-4"))
    assert C.from_dict(Opt, yaml.safe_load("lr: 1.0e-4")).lr == pytest.approx(1e-4)


def test_committed_schema_is_generated_from_the_dataclasses(repo):
    committed = json.loads((repo / "workflow/schemas/params.schema.json").read_text())
    assert committed == C.json_schema(), "run `maetok schema` after editing maetok/config.py"


def _walk(schema: dict, path: str = ""):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}" if path else key)


def test_schema_is_strict_and_documented():
    schema = C.json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for path, node in _walk(schema):
        if node.get("type") == "object" and "properties" in node:
            assert node["additionalProperties"] is False, path
        if path:
            assert node.get("description"), f"{path} has no description"


def test_schema_and_dataclasses_agree_on_params_yaml(raw):
    jsonschema.Draft202012Validator(C.json_schema()).validate(raw)
    bad = copy.deepcopy(raw)
    bad["scales"]["tiny"]["data"]["rooot"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(C.json_schema()).validate(bad)
    with pytest.raises(C.ConfigError):
        C.load_params(bad)


def test_schema_keys_equal_dataclass_fields():
    def keys(tp, schema, path):
        assert set(schema["properties"]) == {f.name for f in dataclasses.fields(tp)}, path
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            if dataclasses.is_dataclass(hints[f.name]):
                keys(hints[f.name], schema["properties"][f.name], f"{path}.{f.name}")

    schema = C.json_schema()
    for scale in C.SCALES:
        keys(C.ScaleConfig, schema["properties"]["scales"]["properties"][scale], f"scales.{scale}")


def test_deep_merge_overrides_leaves_and_keeps_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    out = C.deep_merge(base, {"a": {"c": [9]}})
    assert out == {"a": {"b": 1, "c": [9]}, "d": 3}
    assert base["a"]["c"] == [1, 2]


def test_generator_variant_sampling_overrides(raw):
    """LightningDiT samples with its own CFG scale (paper App. C.2); the override stays out of the
    generator's training config, and `by_scale` can override it at one scale."""
    raw = copy.deepcopy(raw)
    raw["generator_variants"]["sit_xl"]["by_scale"]["paper"]["sampling"] = {"cfg_interval_high": 0.7}
    params = C.load_params(raw)
    assert params.sampling("lightningdit").cfg_scale == 1.8 == params.sampling("lightningdit", "paper").cfg_scale
    assert params.sampling("sit_l") == params.active.sampling
    assert params.sampling("sit_xl", "tiny") == params.active.sampling
    paper = params.sampling("sit_xl", "paper")
    assert (paper.cfg_scale, paper.cfg_interval_high) == (1.9, 0.7)
    assert "sampling" not in C.to_dict(params.generator("lightningdit"))
    with pytest.raises(C.ConfigError, match="unknown generator variant 'dit'"):
        params.sampling("dit")


def test_hires_tokenizer_data(raw):
    params = C.load_params(raw)
    assert params.resolution("maetok_512") == "hires" and params.resolution("maetok") == "base"
    assert params.tokenizer_data("maetok_512").image_size == 64
    assert params.tokenizer_data("maetok_512", "paper").image_size == 512
    assert params.tokenizer_data("maetok") == params.active.data
    assert params.tokenizer("maetok_512") == params.tokenizer("maetok")  # only the data differs


def test_job_sampling_records_what_each_guidance_uses(raw):
    """nocfg ignores the CFG setting, so its jobs keep the base one whatever the generator's (editing
    LightningDiT's CFG reruns only its guided samples); a sweep point carries its own setting."""
    params = C.load_params(raw)
    base = params.active.sampling
    # its own sampler (the Euler ODE, Table 9), the base CFG fields
    assert params.job_sampling("lightningdit", "nocfg") == C.dataclasses.replace(base, sampler="ode")
    assert params.job_sampling("lightningdit", "cfg").cfg_scale == 1.8
    assert params.job_sampling("sit_xl", "cfg") == base
    point = params.job_sampling("lightningdit", "cfg1.8_0.125-0.8")
    assert (point.cfg_scale, point.cfg_interval_low, point.cfg_interval_high) == (1.8, 0.125, 0.8)
    assert point.num_samples == params.active.cfg_sweep.num_samples == 1000


def test_same_runs_merge_variants_that_differ_only_at_another_scale(raw):
    params = C.load_params(raw)
    tiny_tok, paper_tok = params.same_runs("tokenizer", "tiny"), params.same_runs("tokenizer", "paper")
    assert tiny_tok["maetok_main"] == "maetok" and paper_tok["maetok_main"] == "maetok_main"
    assert tiny_tok["maetok_512"] == "maetok_512"  # same config as maetok_main, other data (64 px)
    assert params.same_runs("generator", "tiny")["sit_xl"] == "sit_l"
    assert params.same_runs("generator", "paper")["sit_xl"] == "sit_xl"
    assert all(v == k for k, v in paper_tok.items())  # at paper scale every variant is its own run
    raw["tokenizer_variants"]["maetok_main"]["by_scale"]["tiny"] = {"optim": {"steps": 1600}}
    assert C.load_params(raw).same_runs("tokenizer", "tiny")["maetok_main"] == "maetok_main"


def _field(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _literal(cls, name) -> tuple:
    """The values of the Literal annotation of field `name` (inside a list for list fields)."""
    tp = typing.get_type_hints(cls)[name]
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    assert typing.get_origin(tp) is typing.Literal, (cls.__name__, name, tp)
    return typing.get_args(tp)


def test_size_choices_are_the_model_registries():
    """params.yaml is checked without importing torch (maetok/models/choices.py); the sizes it accepts
    must be exactly the registries' own, with the registry's patch size."""
    import torch

    from maetok.models import choices
    from maetok.models.sit import SiT_models
    from maetok.models.tokenizer import MAETok_models

    with torch.device("meta"):
        registry = {name: build().patch_size for name, build in MAETok_models.items()}
    assert choices.TOKENIZER_PATCH_SIZES == registry
    assert _field(C.TokenizerModelConfig, "size").metadata["choices"] == tuple(MAETok_models)
    assert _field(C.GeneratorConfig, "size").metadata["choices"] == tuple(SiT_models)


def test_option_choices_are_the_models_own():
    """Every option of the tokenizer that params.yaml sets accepts exactly what `MAETok` accepts."""
    from maetok.models import aux_decoders, choices, masking, tokenizer

    assert _literal(C.TokenizerModelConfig, "pos_embed") == tokenizer.POS_EMBEDS == choices.POS_EMBEDS
    assert _literal(C.TokenizerModelConfig, "decoder_block") == tokenizer.DECODER_BLOCKS
    assert _literal(C.TokenizerModelConfig, "bottleneck") == tokenizer.BOTTLENECKS
    assert _literal(C.MaskConfig, "distribution") == masking.MASK_RATIO_DISTS
    assert _literal(C.AuxConfig, "targets") == tokenizer.AUX_TARGETS == tuple(aux_decoders.AUX_LOSS_DEFAULTS)
    assert _literal(C.AuxConfig, "depth") == tokenizer.AUX_DEPTHS
    assert tuple(f.name for f in dataclasses.fields(C.AuxLossConfig)) == tokenizer.AUX_TARGETS
    for target in tokenizer.AUX_TARGETS:
        assert _literal(C.AuxLossConfig, target) == tokenizer.AUX_LOSSES
    # and the model really rejects what the config would reject
    with pytest.raises(ValueError, match="unknown aux target 'depth'"):
        tokenizer.MAETok_models["MAETok-T"](aux_targets=("depth",))


@pytest.mark.parametrize("generator", ["lightningdit", "lightningdit_512"])
def test_lightningdit_samples_with_the_euler_ode(raw, generator):
    """Paper App. B, Table 9: LightningDiT samples with the Euler ODE sampler (SiT with Euler-Maruyama,
    Table 8), for every job that samples it at paper scale."""
    params = C.load_params(raw)
    assert params.sampling(generator, "paper").sampler == "ode"
    for guidance in ("nocfg", "cfg"):
        assert params.job_sampling(generator, guidance, "paper").sampler == "ode"
    assert params.sampling("sit_xl", "paper").sampler == "sde"
