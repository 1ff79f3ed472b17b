"""Tokenizer training: exact resume, stage 2 freezes the encoder, clear errors, losses wired."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from maetok import config as C
from maetok.data import ImageDataset
from maetok.models import standins
from maetok.models.io import CheckpointError, build_tokenizer, load_tokenizer, save_tokenizer
from maetok.train import checkpoint as ckpt
from maetok.train import tokenizer as tok_train
from maetok.train.tokenizer import (
    TokenizerJob,
    _batches,
    build_loss,
    load_gan_state,
    stage2_mask_ratio,
    step_size,
    train,
)
from maetok.train.utils import adamw
from maetok.utils.images import resize_images


def tok_cfg(**override) -> C.TokenizerConfig:
    params = C.load_params()
    base = C.to_dict(params.tokenizer("maetok"))
    small = {"aux": {"targets": ["hog"]}, "loss": {"perceptual_weight": 0.0, "disc_weight": 0.0},
             "optim": {"batch_size": 8, "steps": 3, "ckpt_every": 1, "log_every": 1, "warmup_steps": 1},
             "finetune": {"steps": 3, "anneal_steps": 2}}
    return C.from_dict(C.TokenizerConfig, C.deep_merge(C.deep_merge(base, small), override))


DATA = C.DataConfig(dataset="fashion_mnist", root=None, download=False, url="", image_size=32, num_classes=10,
                    hflip=True)


def _job(tmp_path, name, data, aux="", init=""):
    return TokenizerJob(data_dir=str(data), aux_dir=str(aux), out=str(tmp_path / f"{name}.safetensors"),
                        ckpt_dir=str(tmp_path / f"ck_{name}"), init=str(init), variant=name)


def test_resume_is_bit_identical(tmp_path, tiny_data):
    cfg = tok_cfg()
    train(cfg, DATA, _job(tmp_path, "full", tiny_data), 1)
    short = C.dataclasses.replace(cfg, optim=C.dataclasses.replace(cfg.optim, steps=2))
    job = _job(tmp_path, "resumed", tiny_data)
    train(short, DATA, job, 1)  # "killed" after step 2: its checkpoint stays
    metrics = train(cfg, DATA, job, 1)
    assert metrics["resumed_from"] == 2
    a, b = load_file(str(tmp_path / "full.safetensors")), load_file(job.out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the metrics JSON's loss curve has every logged step, also those before the resume
    full, resumed = (json.loads((tmp_path / f"{n}.json").read_text())["curve"] for n in ("full", "resumed"))
    assert [e["step"] for e in resumed] == [1, 2, 3] and resumed == full


def test_stage2_freezes_the_encoder_and_drops_aux(tmp_path, tiny_data):
    cfg = tok_cfg()
    stage1 = _job(tmp_path, "s1", tiny_data)
    train(cfg, DATA, stage1, 1)
    train(cfg, DATA, _job(tmp_path, "s2", tiny_data, init=stage1.out), 2)
    before, after = load_file(stage1.out), load_file(str(tmp_path / "s2.safetensors"))
    enc = [k for k in before if k.startswith(("encoder", "bottleneck"))]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)
    dec = [k for k in before if k.startswith("decoder")]
    assert any(not torch.equal(before[k], after[k]) for k in dec)
    assert not any(k.startswith("aux_decoders") for k in after)
    model, loaded_cfg, info = load_tokenizer(tmp_path / "s2.safetensors")
    assert info["stage"] == 2 and loaded_cfg.model == cfg.model
    z = model.encode(torch.zeros(2, 3, 32, 32))
    assert z.shape == (2, cfg.model.num_latent_tokens, cfg.model.latent_dim)


def test_stage2_mask_ratio_anneals_linearly_to_zero():
    ft = tok_cfg().finetune
    ratios = [stage2_mask_ratio(s, C.dataclasses.replace(ft, mask_start=0.6, anneal_steps=4)) for s in range(6)]
    assert ratios == pytest.approx([0.6, 0.4, 0.2, 0.0, 0.0, 0.0])   # 0 at the anneal's last step (index 3)


@pytest.mark.parametrize("scale", ["paper", "tiny"])
def test_stage2_last_steps_mask_no_token(scale):
    """Paper §3.3/§4.1: the ratio falls from 60% to 0, so the last stage-2 steps encode unmasked images,
    also at paper scale where anneal_steps == steps and the masked-token count is rounded up."""
    ft = C.load_params().tokenizer("maetok", scale).finetune
    assert ft.anneal_steps <= ft.steps and (scale == "tiny" or ft.anneal_steps == ft.steps)
    ratios = [stage2_mask_ratio(s, ft) for s in range(ft.steps)]
    assert ratios[0] == ft.mask_start > 0
    assert all(a >= b for a, b in zip(ratios, ratios[1:], strict=False))   # monotone
    assert ratios[ft.anneal_steps - 1:] == [0.0] * (ft.steps - ft.anneal_steps + 1)
    model = build_tokenizer(tok_cfg(), image_size=128).train()   # 16 x 16 = 256 patch tokens, as at 256 px
    x = torch.zeros(2, 3, 128, 128)
    probe = sorted({*range(0, ft.steps, max(1, ft.steps // 50)), *range(ft.steps - 3, ft.steps)})
    counts = []
    for s in probe:
        mask = model.sample_mask(x, stage2_mask_ratio(s, ft, 256))
        counts.append(0 if mask is None else int(mask.sum(1).max()))
    assert counts[0] == int(256 * ft.mask_start)   # rounded down to whole tokens
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
    assert counts[-1] == 0 and counts[0] > counts[len(counts) // 2] > 0
    # Not just the last step: every step whose linear ratio is below one token in 256 masks none.
    unmasked = sum(stage2_mask_ratio(s, ft, 256) == 0.0 for s in range(ft.steps))
    assert unmasked >= ft.anneal_steps / (ft.mask_start * 256) - 1


def test_stage2_continues_the_stage1_gan_from_its_first_step(tmp_path, tiny_data, standin_dir, monkeypatch):
    """Stage 2 (paper §3.3: the same Eq. 6 loss) starts from stage 1's discriminator, LeCAM EMAs and D
    optimiser state, stored in the stage-1 file, with the adversarial term on at its step 0."""
    cfg = tok_cfg(loss={"disc_weight": 0.4, "disc_start": 1}, finetune={"steps": 2})
    stage1 = _job(tmp_path, "s1", tiny_data, aux=standin_dir)
    train(cfg, DATA, stage1, 1)   # D updates at steps 1 and 2
    saved = load_file(stage1.out)
    assert any(k.startswith("gan.heads.") for k in saved) and any(k.startswith("gan.opt.") for k in saved)
    model, _, _ = load_tokenizer(stage1.out)   # what eval / latents read: the tokenizer alone
    assert not any(k.startswith("gan.") for k in model.state_dict())
    fresh = build_loss(cfg, standin_dir, 2).discriminator.heads.state_dict()
    assert any(not torch.equal(v, saved[f"gan.heads.{k}"]) for k, v in fresh.items())   # D did train in stage 1

    seen, real_step = {}, tok_train.train_step

    def spy(model, ema, loss_fn, opt, opt_d, x, step, *args, **kwargs):
        if step == 0:
            seen["heads"] = {k: v.clone() for k, v in loss_fn.discriminator.heads.state_dict().items()}
            seen["lecam"] = {k: v.clone() for k, v in loss_fn.lecam.state_dict().items()}
            seen["opt"] = {i: {k: v.clone() for k, v in st.items()} for i, st in opt_d.state_dict()["state"].items()}
        terms = real_step(model, ema, loss_fn, opt, opt_d, x, step, *args, **kwargs)
        seen.setdefault("terms", terms)
        return terms

    monkeypatch.setattr(tok_train, "train_step", spy)
    train(cfg, DATA, _job(tmp_path, "s2", tiny_data, aux=standin_dir, init=stage1.out), 2)
    assert seen["heads"].keys() == {k.removeprefix("gan.heads.") for k in saved if k.startswith("gan.heads.")}
    assert all(torch.equal(v, saved[f"gan.heads.{k}"]) for k, v in seen["heads"].items())
    assert all(torch.equal(v, saved[f"gan.lecam.{k}"]) for k, v in seen["lecam"].items())
    assert float(seen["lecam"]["ema_real"]) != 0.0
    assert seen["opt"] and all(float(st["step"]) == 2 for st in seen["opt"].values())
    assert all(torch.equal(v, saved[f"gan.opt.{i}.{k}"]) for i, st in seen["opt"].items() for k, v in st.items())
    assert float(seen["terms"]["adv"]) != 0.0 and float(seen["terms"]["d_weight"]) > 0
    assert "disc_loss" in seen["terms"]   # D is updated at stage-2 step 0 too


def test_stage2_gan_start_and_a_stage1_file_without_gan(tmp_path, standin_dir):
    cfg = tok_cfg(loss={"disc_weight": 0.4, "disc_start": 7}, finetune={"disc_start": 3})
    stage1, stage2 = build_loss(cfg, standin_dir, 1), build_loss(cfg, standin_dir, 2)
    assert [stage1.gan_active(s) for s in (6, 7)] == [False, True]
    assert [stage2.gan_active(s) for s in (2, 3)] == [False, True]
    assert tok_cfg().finetune.disc_start == 0   # params.yaml: on from stage-2 step 0 (paper §3.3)
    with pytest.raises(C.ConfigError, match="finetune.disc_start: must be >= 0"):
        tok_cfg(finetune={"disc_start": -1})
    path = tmp_path / "stage1.safetensors"   # written without a GAN
    save_tokenizer(build_tokenizer(tok_cfg(aux={"targets": []}), 32), path, cfg, 32, {})
    opt_d = adamw(stage2.discriminator.heads.parameters(), 1e-3, (0.9, 0.95))
    with pytest.raises(CheckpointError, match=r"holds no discriminator state.*snakemake --forcerun"):
        load_gan_state(path, stage2, opt_d)


def test_full_loss_with_standin_teachers_perceptual_and_gan(tmp_path, tiny_data, standin_dir):
    cfg = tok_cfg(aux={"targets": ["hog", "dino", "clip"]},
                  loss={"perceptual_weight": 1.0, "perceptual_stage1": True, "disc_weight": 0.4, "disc_start": 1})
    metrics = train(cfg, DATA, _job(tmp_path, "full_loss", tiny_data, aux=standin_dir), 1)
    final = metrics["final"]
    assert {"aux/hog", "aux/dino", "aux/clip", "perceptual", "disc_loss"} <= set(final)
    assert final["adv"] != 0.0 and final["perceptual"] > 0


@pytest.mark.parametrize("finetune", [True, False])
def test_perceptual_moves_to_stage2_or_the_last_stage1_steps(standin_dir, finetune):
    cfg = tok_cfg(loss={"perceptual_weight": 0.1, "perceptual_stage1": False, "perceptual_last_steps": 2},
                  optim={"steps": 5}, finetune={"enabled": finetune})
    stage1 = build_loss(cfg, standin_dir, 1)
    assert (stage1.perceptual is None) == finetune
    # without a stage 2: off for steps 0-2, on for the last two (3, 4)
    expected = [0.0] * 5 if finetune else [0.0, 0.0, 0.0, 0.1, 0.1]
    assert [stage1.perceptual_factor(s) for s in range(5)] == pytest.approx(expected)
    assert build_loss(cfg, standin_dir, 2).perceptual_factor(0) == pytest.approx(0.1)
    paper = C.dataclasses.replace(cfg, loss=C.dataclasses.replace(cfg.loss, perceptual_stage1=True))
    assert build_loss(paper, standin_dir, 1).perceptual_factor(0) == pytest.approx(0.1)


def test_perceptual_network_runs_only_inside_its_window(standin_dir):
    cfg = tok_cfg(loss={"perceptual_weight": 0.1, "perceptual_stage1": False, "perceptual_last_steps": 2},
                  optim={"steps": 5}, finetune={"enabled": False})
    loss = build_loss(cfg, standin_dir, 1)
    calls = []
    loss.perceptual.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_rec = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    before, inside = loss.generator_loss(x, x_rec, 2), loss.generator_loss(x, x_rec, 3)
    assert len(calls) == 1
    assert before["perceptual"] == 0 and inside["perceptual"] > 0
    assert inside["loss"] > before["loss"]


def test_vae_reports_kl(tmp_path, tiny_data):
    cfg = tok_cfg(model={"bottleneck": "vae"}, mask={"enabled": False}, aux={"targets": []})
    metrics = train(cfg, DATA, _job(tmp_path, "vae", tiny_data), 1)
    assert metrics["final"]["kl"] > 0


def test_missing_teacher_weights_name_the_file(tmp_path, tiny_data):
    cfg = tok_cfg(aux={"targets": ["dino"]})
    with pytest.raises(FileNotFoundError, match="teacher_dino.safetensors"):
        train(cfg, DATA, _job(tmp_path, "x", tiny_data, aux=tmp_path / "no_aux"), 1)


def test_pretrained_teacher_missing_file_is_never_random(tmp_path, tiny_data):
    cfg = tok_cfg(aux={"targets": ["clip"]}, networks={"kind": "pretrained", "clip_weights": "nope.safetensors"})
    with pytest.raises(FileNotFoundError, match=r"nope.safetensors.*tokenizer.networks.clip_weights"):
        train(cfg, DATA, _job(tmp_path, "x", tiny_data), 1)


def test_corrupted_checkpoint_falls_back_then_explains(tmp_path, tiny_data):
    cfg = tok_cfg()
    job = _job(tmp_path, "c", tiny_data)
    train(C.dataclasses.replace(cfg, optim=C.dataclasses.replace(cfg.optim, steps=2)), DATA, job, 1)
    newest = ckpt.step_dirs(job.ckpt_dir)[-1]
    (newest / "model.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        metrics = train(cfg, DATA, job, 1)
    assert metrics["resumed_from"] == 1
    for d in ckpt.step_dirs(job.ckpt_dir):
        (d / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=f"Delete {job.ckpt_dir}"), pytest.warns(UserWarning):
        train(cfg, DATA, job, 1)


def test_corrupted_tokenizer_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "tok.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="unreadable tokenizer file"):
        load_tokenizer(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_tokenizer(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("override, message", [
    ({"mask": {"ratio_low": 0.7, "ratio_high": 0.5}}, "ratio_low"),
    ({"aux": {"targets": ["sift"]}}, "'sift' is not one of"),
    ({"model": {"size": "MAETok-Huge"}}, "'MAETok-Huge' is not one of"),
])
def test_bad_tokenizer_config_names_the_key(override, message):
    with pytest.raises(C.ConfigError, match=message):
        tok_cfg(**override)


def test_image_size_not_divisible_by_patch_is_clear():
    with pytest.raises(ValueError, match="not divisible by patch size"):
        build_tokenizer(tok_cfg(), image_size=30)


@pytest.mark.parametrize("edit", [{"steps": 2}, {"lr": 1.0e-3}])
def test_checkpoints_of_another_run_are_never_resumed(tmp_path, tiny_data, edit):
    """A shortened run, or one with another lr, starts from step 0 (the old checkpoints are moved
    aside, not deleted) and equals a fresh run; it does not hand back the old run's weights."""
    cfg = tok_cfg()
    job = _job(tmp_path, "run", tiny_data)
    train(cfg, DATA, job, 1)
    edited = C.dataclasses.replace(cfg, optim=C.dataclasses.replace(cfg.optim, **edit))
    with pytest.warns(UserWarning, match="another config or input"):
        metrics = train(edited, DATA, job, 1)
    assert metrics["resumed_from"] == 0
    assert list(tmp_path.glob("*.stale-*"))
    train(edited, DATA, _job(tmp_path, "fresh", tiny_data), 1)
    a, b = load_file(job.out), load_file(str(tmp_path / "fresh.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- mixed-resolution training (paper App. C.4, Table 13b) ---------------------------------
def test_step_size_is_seeded_and_uses_every_size():
    sizes = [step_size([32, 64], seed=0, step=s) for s in range(200)]
    assert set(sizes) == {32, 64} and 60 < sizes.count(64) < 140
    assert sizes == [step_size([32, 64], seed=0, step=s) for s in range(200)]
    assert sizes != [step_size([32, 64], seed=1, step=s) for s in range(200)]
    assert step_size([], 0, 5) is None and step_size([48], 0, 5) == 48


def test_batches_are_resized_per_step(tiny_data):
    ds = ImageDataset(tiny_data, "train")
    for step, x in _batches(ds, 8, 0, 0, 0, 1, False, torch.device("cpu"), [32, 64]):
        if step == 12:
            break
        size = step_size([32, 64], 0, step)
        assert x.shape == (8, 3, size, size) and x.min() >= -1 and x.max() <= 1
        # the same images as without mixing, only resized
        torch.testing.assert_close(x, resize_images(plain_batch(ds, step), size))


def plain_batch(ds, step):
    return next(_batches(ds, 8, 0, step, 0, 1, False, torch.device("cpu")))[1]


def test_resize_round_trip_keeps_the_image():
    yy, xx = torch.meshgrid(torch.linspace(0, 3, 32), torch.linspace(0, 3, 32), indexing="ij")
    x = (yy.sin() * xx.cos()).expand(2, 3, 32, 32).contiguous()  # a smooth image survives 32 -> 64 -> 32
    back = resize_images(resize_images(x, 64), 32)
    assert (back - x).abs().max() < 0.02
    assert resize_images(x, 32) is x


@pytest.mark.parametrize("pos_embed", ["rope_mixed", "ape"])
def test_training_on_mixed_sizes_and_reconstructing_both(tmp_path, tiny_data, standin_dir, pos_embed):
    cfg = tok_cfg(model={"pos_embed": pos_embed}, aux={"targets": ["hog", "dino"]}, mixed_resolution=[32, 64],
                  optim={"steps": 4})
    assert {step_size([32, 64], 0, s) for s in range(4)} == {32, 64}  # both sizes are trained
    job = _job(tmp_path, pos_embed, tiny_data, aux=standin_dir)
    metrics = train(cfg, DATA, job, 1)
    assert np.isfinite(metrics["final"]["loss"]) and "aux/dino" in metrics["final"]
    model, saved, _ = load_tokenizer(job.out)
    assert saved.mixed_resolution == (32, 64)
    with torch.no_grad():
        for size in (32, 64):
            x = torch.rand(2, 3, size, size) * 2 - 1
            assert model.decode(model.encode(x), img_size=size).shape == x.shape


def test_sizes_not_divisible_by_the_patch_and_linear_aux_are_rejected(tmp_path, tiny_data):
    with pytest.raises(C.ConfigError, match=r"tokenizer.mixed_resolution: image size\(s\) \[36\].*patch size 8"):
        train(tok_cfg(mixed_resolution=[32, 36]), DATA, _job(tmp_path, "bad", tiny_data), 1)
    with pytest.raises(C.ConfigError, match="aux.depth 'linear'"):
        train(tok_cfg(mixed_resolution=[32, 64], aux={"depth": "linear"}), DATA, _job(tmp_path, "lin", tiny_data), 1)
    with pytest.raises(C.ConfigError, match="mixed_resolution: image sizes must be positive"):
        tok_cfg(mixed_resolution=[0])


def test_eval_reports_the_largest_training_size(tmp_path, tiny_data, standin_dir):
    from maetok.eval import reconstruction

    cfg = tok_cfg(mixed_resolution=[32, 64], optim={"steps": 2})
    job = _job(tmp_path, "mr", tiny_data, aux=standin_dir)
    train(cfg, DATA, job, 1)
    evaluator = tmp_path / "evaluator.safetensors"
    standins.save_weights(standins.seeded(standins.Standin_models["evaluator"], 0), evaluator)
    params = C.load_params()
    ev = C.dataclasses.replace(params.active.evaluation, num_recon=64, batch_size=32)
    out = tmp_path / "recon.json"
    metrics = reconstruction.run(job.out, tiny_data, ev, str(evaluator), out, tmp_path / "grid.png",
                                 tmp_path / "fid_cache")
    assert metrics["val"]["image_size"] == 32 and metrics["hires"]["image_size"] == 64
    assert metrics["hires"]["n"] == 64 and np.isfinite(metrics["hires"]["rfid"])
    assert 5 < metrics["hires"]["psnr"] < 60
    assert json.loads(out.read_text())["hires"]["ssim"] == pytest.approx(metrics["hires"]["ssim"])
    # each image set has its own cached reference statistics, named by where its images come from
    cached = {p.name.split("-standin")[0] for p in (tmp_path / "fid_cache").rglob("*-standin*")}
    assert cached == {"data32-val64", "data32-val64-up64px", "ood-digits1797-32px"}




@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, tiny_data, monkeypatch):
    """optim.compile: the blocks of the encoder and the decoders are compiled, and two steps give
    the weights of eager training (to fp32 rounding) in the same file layout. Every other test runs
    with MAETOK_NO_COMPILE=1 (conftest), which must really turn it off."""
    from maetok.models.aux_decoders import grouped_block
    from maetok.models.tokenizer import MAETok

    compiled, real = [], MAETok.compile_blocks

    def spy(model, parts):
        compiled.append(tuple(parts))
        real(model, parts)
        for part in parts:  # every block (and the grouped aux layer) is now a compiled one
            blocks = [b for d in getattr(model, part).values() for b in d.blocks] \
                if part == "aux_decoders" else list(getattr(model, part).blocks)
            assert blocks and all(b._compiled_call_impl is not None for b in blocks)
        assert model.aux_decoders.block_fn is not grouped_block

    monkeypatch.setattr(MAETok, "compile_blocks", spy)
    # Two aux decoders (no teacher needed), so the compiled graphs include their grouped layer.
    cfg = tok_cfg(optim={"bf16": False, "steps": 2, "compile": True}, aux={"targets": ["pixel", "hog"]})
    train(cfg, DATA, _job(tmp_path, "eager", tiny_data), 1)
    monkeypatch.delenv("MAETOK_NO_COMPILE")
    train(cfg, DATA, _job(tmp_path, "compiled", tiny_data), 1)
    assert compiled == [("encoder", "decoder", "aux_decoders")]
    a, b = load_file(str(tmp_path / "eager.safetensors")), load_file(str(tmp_path / "compiled.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
