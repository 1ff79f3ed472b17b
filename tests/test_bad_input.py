"""Bad input fails fast with a message naming the key or file and the fix, and loses no outputs.

Cases already covered elsewhere (and not repeated here): unknown key / wrong type / enum via
load_params, check-params and `snakemake -n` (test_config, test_cli, workflow/test_workflow);
missing or truncated Fashion-MNIST files and a missing ImageNet root (tests/data); a missing
stats.json (test_latents); a sample count not divisible by the classes, a CFG interval outside
[0, 1] and a generator paired with another tokenizer's latents or tokenizer (test_sample,
test_generator); a corrupted tokenizer file, missing teacher weights, an unknown aux target and
mask low > high in a tokenizer config (train/test_tokenizer_training); missing FID weights
(eval/test_fidelity).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from maetok import config as C
from maetok import latents as latents_mod
from maetok import losses
from maetok.cli import main
from maetok.data import DataError, ImageDataset
from maetok.eval.generation import SamplesError, load_samples
from maetok.latents import LatentCacheError, LatentDataset, LatentStats
from maetok.models import standins, teachers
from maetok.models.io import CheckpointError, build_generator, save_weights, weights_metadata
from maetok.models.sit import LatentShapeError, SiT_models
from maetok.models.tokenizer import ImageSizeError, MAETok_models
from maetok.report.tables import ReportError
from maetok.report.tables import check_params as check_tables
from maetok.sample import check_pairing
from maetok.utils.io import OutputDirError, atomic_path, check_writable, write_json

BIN = Path(sys.executable).parent


@pytest.fixture
def raw(repo) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def _tiny(d: dict) -> dict:
    return d["scales"]["tiny"]


# --------------------------------------------------------------------------- params.yaml
BAD_PARAMS = [
    (lambda d: _tiny(d)["tokenizer"]["optim"].update(steps=-5), "scales.tiny.tokenizer.optim.steps: must be > 0"),
    (lambda d: _tiny(d)["generator"]["optim"].update(steps=0), "scales.tiny.generator.optim.steps: must be > 0"),
    (lambda d: _tiny(d)["tokenizer"]["finetune"].update(anneal_steps=-1),
     "scales.tiny.tokenizer.finetune.anneal_steps: must be >= 0"),
    (lambda d: _tiny(d)["tokenizer"]["finetune"].update(mask_start=1.5),
     "scales.tiny.tokenizer.finetune.mask_start: must be in [0, 1)"),
    (lambda d: _tiny(d)["standins"].update(teacher_steps=-1), "scales.tiny.standins.teacher_steps: must be >= 0"),
    (lambda d: _tiny(d)["tokenizer"]["mask"].update(ratio_low=0.7, ratio_high=0.5),
     "scales.tiny.tokenizer.mask.ratio_low/scales.tiny.tokenizer.mask.ratio_high: need 0 <= low <= high < 1"),
    (lambda d: d["tokenizer_variants"]["maetok"].update(mask={"ratio_low": 0.9, "ratio_high": 0.2}),
     "tokenizer_variants.maetok.mask.ratio_low"),
    (lambda d: _tiny(d)["tokenizer"]["aux"].update(targets=["hog", "sift"]),
     "scales.tiny.tokenizer.aux.targets[1]: 'sift' is not one of"),
    (lambda d: _tiny(d)["generator"]["transport"].update(path="quadratic"),
     "scales.tiny.generator.transport.path: 'quadratic' is not one of"),
    (lambda d: _tiny(d)["sampling"].update(cfg_interval_high=1.5),
     "scales.tiny.sampling.cfg_interval_low/scales.tiny.sampling.cfg_interval_high: need 0 <= low <= high <= 1"),
    (lambda d: _tiny(d)["sampling"].update(num_samples=5001),
     "scales.tiny.sampling.num_samples: 5001 is not divisible by scales.tiny.data.num_classes = 10"),
    (lambda d: _tiny(d)["generator"]["optim"].update(lr="1e-4"), "write floats as 1.0e-4"),
    # found by fuzzing params.yaml: each used to pass the dry run
    (lambda d: _tiny(d)["generator"]["transport"].update(class_dropout=-0.1),
     "scales.tiny.generator.transport.class_dropout: must be in [0, 1)"),
    (lambda d: d["generator_variants"]["sit_l"].update(transport={"class_dropout": 1.0}),
     "generator_variants.sit_l.transport.class_dropout: must be in [0, 1)"),
    (lambda d: _tiny(d)["data"].update(image_size=36),
     "scales.tiny.data.image_size: 36 px is not divisible by the patch size 8 of MAETok-XS"),
    (lambda d: d["scales"]["paper"]["hires"].update(image_size=520),
     "scales.paper.hires.image_size: 520 px is not divisible by the patch size 16 of MAETok-B/16"),
    (lambda d: d["tokenizer_variants"]["ape"]["by_scale"]["tiny"].update(mixed_resolution=[32, 60]),
     "tokenizer_variants.ape.by_scale.tiny.mixed_resolution: 60 px is not divisible by the patch size 8"),
    (lambda d: _tiny(d)["hires"].update(image_size=68),
     "scales.tiny.hires.image_size: 68 px is not divisible by the patch size 8 of MAETok-XS (the model.size of "
     "tokenizer variant 'maetok_512' at scale tiny)"),
    (lambda d: d["tokenizer_variants"]["ae"].update(description=5),
     "tokenizer_variants.ae.description: expected a string, got int 5"),
    (lambda d: d["generator_variants"]["sit_l"].update(description=["SiT-L"]),
     "generator_variants.sit_l.description: expected a string, got list"),
]


@pytest.mark.parametrize("mutate, message", BAD_PARAMS, ids=[m for _, m in BAD_PARAMS])
def test_bad_params_name_the_key_path(raw, mutate, message):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(C.ConfigError) as e:
        C.load_params(bad)
    assert message in str(e.value)


@pytest.mark.parametrize("mutate, message", [BAD_PARAMS[0], BAD_PARAMS[5], BAD_PARAMS[10]])
def test_check_params_exits_2_with_the_key_path(raw, tmp_path, capsys, mutate, message):
    bad = copy.deepcopy(raw)
    mutate(bad)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["check-params", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maetok check-params: error: ") and message in err


@pytest.mark.parametrize("override, message", [
    ("scales:\n  tiny:\n    generator:\n      optim:\n        steps: -5\n",
     "scales.tiny.generator.optim.steps: must be > 0"),
    ("scales:\n  tiny:\n    tokenizer:\n      mask:\n        ratio_low: 0.7\n        ratio_high: 0.5\n",
     "scales.tiny.tokenizer.mask.ratio_low/scales.tiny.tokenizer.mask.ratio_high"),
])
def test_snakemake_dry_run_stops_on_bad_params_before_any_job(repo, tmp_path, override, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    r = subprocess.run([str(BIN / "snakemake"), "-n", "--configfile", str(bad)], cwd=repo, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert message in r.stdout + r.stderr
    assert "fix the key in params.yaml" in r.stdout + r.stderr
    assert "Job stats" not in r.stdout


def _with_line(repo: Path, tmp_path: Path, after: str, line: str) -> tuple[Path, int]:
    """A copy of params.yaml with `line` inserted after the first line starting with `after` (stripped);
    returns the copy and the 1-based number of the inserted line."""
    lines = (repo / "params.yaml").read_text().splitlines(keepends=True)
    i = next(n for n, text in enumerate(lines) if text.strip().startswith(after))
    lines.insert(i + 1, line)
    path = tmp_path / "params.yaml"
    path.write_text("".join(lines))
    return path, i + 2


def test_duplicate_key_names_the_key_and_both_lines(repo, tmp_path, capsys):
    """PyYAML (and Snakemake's loader) keep the last of two equal keys silently."""
    path, line = _with_line(repo, tmp_path, "image_size: 32", "      image_size: 48\n")
    with pytest.raises(C.ConfigError) as e:
        C.load_params(path)
    assert f"duplicate key 'scales.tiny.data.image_size' on lines {line - 1} and {line}" in str(e.value)
    assert main(["check-params", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert "duplicate key 'scales.tiny.data.image_size'" in err and err.count("\n") == 1


def test_yaml_syntax_error_keeps_the_line_and_column(repo, tmp_path, capsys):
    bad = "      num_classes: 10: 12\n"
    path, line = _with_line(repo, tmp_path, "image_size: 32", bad)
    with pytest.raises(C.ConfigError) as e:
        C.load_params(path)
    column = bad.index(": 12") + 1
    assert f"{path}: YAML syntax error at line {line}, column {column}: mapping values are not allowed here" in str(
        e.value)
    assert main(["check-params", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"line {line}, column {column}" in err and err.count("\n") == 1


def test_table_naming_an_undefined_variant_stops_at_load(raw, tmp_path, capsys):
    """A table row whose variant params.yaml lacks used to fail as a MissingInputException of make_table."""
    del raw["tokenizer_variants"]["mask_0_60"]  # only Table 1c uses it: the params alone are consistent
    params = C.load_params(raw)
    with pytest.raises(ReportError, match=r"table_specs.yaml: table1c \(paper row \d+\) uses tokenizer variant "
                                          r"'mask_0_60', which params.yaml `tokenizer_variants` does not define"):
        check_tables(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check-params", "--params", str(path)]) == 2
    assert "uses tokenizer variant 'mask_0_60'" in capsys.readouterr().err


def test_cfg_sweep_step_that_the_generator_does_not_keep_stops_at_load(raw):
    """Table 12 samples the EMA of step cfg_sweep.generator_step; a step not among the generator's
    eval_steps used to end in a traceback from make_table's input function."""
    raw["scales"]["tiny"]["cfg_sweep"]["generator_step"] = 300
    with pytest.raises(ReportError, match=r"scales.tiny.cfg_sweep.generator_step: 300 is not one of the steps whose "
                                          r"EMA generator variant 'sit_xl' keeps .* add 300 to the `eval_steps`"):
        check_tables(C.load_params(raw))


def test_image_size_not_divisible_by_patch_names_the_keys():
    with pytest.raises(ImageSizeError) as e:
        MAETok_models["MAETok-XS"](img_size=30)
    msg = str(e.value)
    assert "30x30 is not divisible by patch size 8" in msg
    assert "data.image_size" in msg and "tokenizer.model.size" in msg


# --------------------------------------------------------------------------- data
def test_missing_dataset_via_cli_exits_2_naming_the_key(tmp_path, capsys):
    cfg = {"dataset": "imagefolder", "root": str(tmp_path / "imagenet"), "download": False, "url": "",
           "image_size": 32, "num_classes": 2, "hflip": True}
    out = tmp_path / "data"
    assert main(["prepare-data", "--config-json", json.dumps(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "scales.paper.data.root" in err and str(tmp_path / "imagenet") in err
    assert not (out / "manifest.json").exists()  # written last: downstream jobs never see a partial dataset


def test_truncated_prepared_dataset_names_the_file_and_rule(tiny_data):
    path = tiny_data / "train_images.npy"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError) as e:
        ImageDataset(tiny_data, "train")
    assert str(path) in str(e.value) and "truncated or corrupted" in str(e.value)
    assert "prepare_data" in str(e.value)


# --------------------------------------------------------------------------- teachers / evaluator
def test_missing_standin_teacher_names_the_file_and_rule(tmp_path):
    nets = C.load_params().scales["tiny"].tokenizer.networks
    with pytest.raises(FileNotFoundError) as e:
        teachers.load_teachers(nets, ["hog", "dino"], tmp_path / "aux_models", 32, 8)
    msg = str(e.value)
    assert str(tmp_path / "aux_models" / "teacher_dino.safetensors") in msg and "rule train_standin" in msg


def test_missing_pretrained_teacher_names_the_key_and_how_to_get_it(tmp_path):
    nets = C.load_params().scales["paper"].tokenizer.networks
    nets = C.dataclasses.replace(nets, dino_weights=str(tmp_path / "dinov2.safetensors"))
    with pytest.raises(teachers.MissingWeightsError) as e:
        teachers.load_teachers(nets, ["dino"], "", 256, 16)
    msg = str(e.value)
    assert "dinov2.safetensors" in msg and "tokenizer.networks.dino_weights" in msg
    assert "huggingface-cli download" in msg and "never random" in msg


@pytest.mark.parametrize("model", ["vit_small_patch14_dinov2.lvd142m", "vit_base_patch14_dinov2.lvd142m"])
def test_missing_discriminator_weights_offer_a_file_of_the_configured_model(tmp_path, model):
    """The paper-scale backbone is DINOv2-S/14: the hint used to offer DINO v1's ViT-S/16 file, which does not
    load into it. It now comes from timm's config of the configured name."""
    assert C.load_params().scales["paper"].tokenizer.networks.disc_model == "vit_small_patch14_dinov2.lvd142m"
    with pytest.raises(FileNotFoundError) as e:
        losses.dino_vits16(tmp_path / "disc.safetensors", model)
    msg = str(e.value)
    assert f"huggingface-cli download timm/{model} model.safetensors" in msg
    assert "dino_deitsmall16" not in msg and "tokenizer.networks.disc_weights" in msg


def test_missing_or_corrupted_evaluator_names_the_file_and_rule(tmp_path):
    path = tmp_path / "evaluator.safetensors"
    with pytest.raises(FileNotFoundError, match=r"evaluator.safetensors' not found.*rule train_standin"):
        standins.register_evaluator(path)
    with pytest.raises(FileNotFoundError, match=r"evaluator.safetensors' not found.*rule train_standin"):
        standins.load_weights(standins.Evaluator(), path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"evaluator.safetensors' are unreadable.*rule train_standin"):
        standins.load_weights(standins.Evaluator(), path)


def test_corrupted_tokenizer_via_cli_exits_2_naming_the_file_and_rule(tmp_path, tiny_data, capsys):
    tok = tmp_path / "tokenizer.safetensors"
    tok.write_bytes(b"not a safetensors file")
    data_cfg = C.to_dict(C.load_params().scales["tiny"].data)
    out = tmp_path / "latents"
    assert main(["cache-latents", "--config-json", json.dumps(data_cfg), "--tokenizer", str(tok),
                 "--data", str(tiny_data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{tok}: unreadable tokenizer file" in err and "train_tokenizer" in err
    assert not out.exists()


# --------------------------------------------------------------------------- latent cache
def test_truncated_latent_shard_names_the_file_and_rule(latent_cache, tmp_path):
    d = latent_cache(tmp_path / "lat")
    shard = d / "train_flip.npy"
    shard.write_bytes(shard.read_bytes()[:500])
    with pytest.raises(LatentCacheError) as e:
        LatentDataset(d)
    msg = str(e.value)
    assert str(shard) in msg and "truncated or corrupted" in msg and "rule cache_latents" in msg


def test_latents_of_wrong_dtype_or_shape_are_rejected(latent_cache, tmp_path):
    d = latent_cache(tmp_path / "lat")
    z = np.load(d / "train.npy")
    np.save(d / "train.npy", z.astype(np.float32))
    with pytest.raises(LatentCacheError, match=r"train.npy has dtype float32, expected float16.*cache_latents"):
        LatentDataset(d)
    np.save(d / "train.npy", np.zeros((len(z), 16, 4), np.float16))
    with pytest.raises(LatentCacheError, match=r"shape \(32, 16, 4\).*declares \(N, L, H\) = \(N, 8, 4\)"):
        LatentDataset(d)
    np.save(d / "train.npy", z)
    np.save(d / "train_labels.npy", np.zeros(5, np.int64))
    with pytest.raises(LatentCacheError, match=r"train_labels.npy holds int64 \(5,\), expected \(32,\)"):
        LatentDataset(d)


@pytest.mark.parametrize("edit, message", [
    (lambda text: text[: len(text) // 2], "is not valid JSON"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "std"}), "lacks the key 'std'"),
    (lambda text: json.dumps({**json.loads(text), "latent_dim": "thirty-two"}), "wrong type"),
    (lambda text: json.dumps({**json.loads(text), "channel_std": [1.0]}), "channel_mean/channel_std have 4/1"),
])
def test_bad_stats_json_names_the_file_and_rule(latent_cache, tmp_path, edit, message):
    d = latent_cache(tmp_path / "lat")
    path = d / "stats.json"
    path.write_text(edit(path.read_text()))
    with pytest.raises(LatentCacheError) as e:
        LatentStats.load(d)
    assert message in str(e.value) and str(path) in str(e.value) and "rule cache_latents" in str(e.value)


def test_missing_latents_via_cli_exits_2_naming_stats_json(tmp_path, capsys):
    cfg = C.to_dict(C.load_params().generator("sit_l", "tiny"))
    r = tmp_path / "run"
    code = main(["train-generator", "--config-json", json.dumps(cfg), "--latents", str(tmp_path / "nolatents"),
                 "--out", str(r / "ema.safetensors"), "--steps-dir", str(r / "steps"),
                 "--loss-curve", str(r / "loss.json"), "--ckpt-dir", str(tmp_path / "ckpt")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nolatents' / 'stats.json'} not found" in err and "rule cache_latents" in err


@pytest.mark.parametrize("guidance, message", [
    ("cfg2", "guidance must be 'nocfg', 'cfg' or 'cfg<scale>_<low>-<high>'"),
    ("cfg1.9_0.8-0.6", "guidance 'cfg1.9_0.8-0.6': the interval needs 0 <= low <= high <= 1"),
])
def test_bad_guidance_name_exits_2_saying_what_is_valid(tmp_path, capsys, guidance, message):
    with pytest.raises(SystemExit) as e:
        main(["sample-generator", "--generator", "g", "--latents", "l", "--tokenizer", "t",
              "--guidance", guidance, "--out", str(tmp_path / "s.npz")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists()


# --------------------------------------------------------------------------- generator vs latents
def _saved_generator(tmp_path: Path, latent_cache, num_tokens: int, sha: str) -> tuple[Path, C.GeneratorConfig]:
    """An untrained SiT-T/1 saved as train_generator saves its EMA, for latents (num_tokens, 4)."""
    cfg = C.load_params().generator("sit_l", "tiny")
    stats = LatentStats.load(latent_cache(tmp_path / f"lat{num_tokens}", sha=sha))
    stats = C.dataclasses.replace(stats, num_latent_tokens=num_tokens)
    model = build_generator(cfg, num_tokens, stats.latent_dim, stats.num_classes)
    path = tmp_path / f"gen{num_tokens}" / "ema.safetensors"
    save_weights(model, path, weights_metadata(cfg, stats, 1))
    return path, cfg


def test_generator_on_latents_of_wrong_shape_names_both_shapes(latent_cache, tmp_path, capsys):
    tok = tmp_path / "tok.safetensors"
    tok.write_bytes(b"tokenizer A")
    from maetok.utils.io import sha256_file

    gen, cfg = _saved_generator(tmp_path, latent_cache, 16, sha256_file(tok))
    lat = latent_cache(tmp_path / "lat", sha=sha256_file(tok))  # (L, H) = (8, 4)
    sampling = C.to_dict(C.load_params().scales["tiny"].sampling)
    out = tmp_path / "samples.npz"
    assert main(["sample-generator", "--config-json", json.dumps(sampling), "--generator", str(gen),
                 "--latents", str(lat), "--tokenizer", str(tok), "--guidance", "nocfg", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"generator {gen} (SiT-T/1) was trained on latents (L, H) = (16, 4)" in err
    assert f"latent cache {lat} holds (L, H) = (8, 4)" in err
    assert not out.exists()
    # the model itself refuses a wrong-shaped batch, naming both shapes
    model = SiT_models["SiT-T/1"](num_tokens=16, in_channels=4, num_classes=3)
    with pytest.raises(LatentShapeError, match=r"built for latents \(L, H\) = \(16, 4\), got \(8, 4\)"):
        model(torch.zeros(2, 8, 4), torch.zeros(2), torch.zeros(2, dtype=torch.long))


def test_generator_with_another_tokenizers_latents_is_refused(latent_cache, tmp_path):
    stats = LatentStats.load(latent_cache(tmp_path / "lat", sha="b" * 64))
    info = {"num_tokens": 8, "latent_dim": 4, "tokenizer_sha256": "a" * 64}
    with pytest.raises(LatentCacheError, match=r"generator g.safetensors was made with tokenizer sha256 aaaa"):
        check_pairing(info, stats, tmp_path / "tok", "g.safetensors", "SiT-T/1")


# --------------------------------------------------------------------------- samples .npz
def _samples(path: Path, **arrays) -> Path:
    base = {"images": np.zeros((6, 8, 8, 3), np.uint8), "labels": np.arange(6) % 3, "indices": np.arange(6)}
    np.savez(path, **{**base, **arrays})
    return path


def test_corrupted_samples_npz_names_the_file_and_rule(tmp_path):
    good = _samples(tmp_path / "good.npz")
    assert load_samples(good)[0].shape == (6, 8, 8, 3)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(SamplesError, match=r"cut.npz is unreadable .*truncated or corrupted.*rule sample_generator"):
        load_samples(cut)
    with pytest.raises(SamplesError, match=r"float32 \(6, 8, 8, 3\), expected uint8"):
        load_samples(_samples(tmp_path / "f.npz", images=np.zeros((6, 8, 8, 3), np.float32)))
    no_labels = tmp_path / "nl.npz"
    np.savez(no_labels, images=np.zeros((6, 8, 8, 3), np.uint8))
    with pytest.raises(SamplesError, match="has no 'labels' array"):
        load_samples(no_labels)
    with pytest.raises(SamplesError, match=r"samples file .*missing.npz not found.*rule sample_generator"):
        load_samples(tmp_path / "missing.npz")


def test_corrupted_samples_via_cli_exits_2(tmp_path, tiny_data, capsys):
    cut = tmp_path / "samples.npz"
    cut.write_bytes(b"PK\x03\x04 truncated")
    cfg = C.to_dict(C.load_params().scales["tiny"].evaluation)
    out = tmp_path / "metrics.json"
    assert main(["eval-generation", "--config-json", json.dumps(cfg), "--samples", str(cut), "--data",
                 str(tiny_data), "--fid-cache", str(tmp_path / "fid"), "--out", str(out)]) == 2
    assert f"{cut} is unreadable" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- unwritable outputs
def test_output_under_a_regular_file_names_the_directory(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results directory should be")
    with pytest.raises(OutputDirError) as e:
        check_writable(blocker / "tiny" / "x.json")
    assert f"directory {blocker / 'tiny'} is not writable" in str(e.value)
    with pytest.raises(OutputDirError, match=f"cannot write {blocker / 'm.json'}"):
        write_json(blocker / "m.json", {"a": 1})


def test_read_only_results_directory_names_it(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        if os.access(d, os.W_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod does not block writes here")
        with pytest.raises(OutputDirError, match=f"directory {d} is not writable .*chmod u\\+w {d}"):
            check_writable(d / "ema.safetensors")
    finally:
        d.chmod(0o700)


def test_cli_refuses_an_unwritable_output_before_any_work(tmp_path, capsys, monkeypatch):
    import maetok.sample

    def never(*a, **k):
        raise AssertionError("sampling started although the output cannot be written")

    monkeypatch.setattr(maetok.sample, "sample_generator", never)
    blocker = tmp_path / "results"
    blocker.write_text("")
    sampling = C.to_dict(C.load_params().scales["tiny"].sampling)
    assert main(["sample-generator", "--config-json", json.dumps(sampling), "--generator", "g", "--latents", "l",
                 "--tokenizer", "t", "--guidance", "nocfg", "--out", str(blocker / "samples.npz")]) == 2
    assert f"directory {blocker} is not writable" in capsys.readouterr().err
    cfg = C.to_dict(C.load_params().generator("sit_l", "tiny"))
    assert main(["train-generator", "--config-json", json.dumps(cfg), "--latents", "l",
                 "--out", str(tmp_path / "ema.safetensors"), "--steps-dir", str(tmp_path / "steps"),
                 "--loss-curve", str(tmp_path / "loss.json"), "--ckpt-dir", str(blocker / "ckpt")]) == 2
    assert f"directory {blocker / 'ckpt'} is not writable" in capsys.readouterr().err


# --------------------------------------------------------------------------- no output is lost
def test_failed_write_keeps_the_previous_output(tmp_path):
    out = tmp_path / "metrics.json"
    write_json(out, {"good": 1})
    with pytest.raises(RuntimeError, match="killed"), atomic_path(out) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("killed mid-write")
    assert json.loads(out.read_text()) == {"good": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_failed_cache_latents_keeps_the_previous_cache(latent_cache, tmp_path, tiny_data, monkeypatch):
    class Broken(torch.nn.Module):
        num_latent_tokens, latent_dim = 8, 4

        def encode(self, x):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(latents_mod, "load_tokenizer", lambda path, device: (Broken(), None, {}))
    old = latent_cache(tmp_path / "latents")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    with pytest.raises(RuntimeError, match="illegal memory access"):
        latents_mod.cache_latents(tmp_path / "tok", tiny_data, old, progress=False)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "latents"]
