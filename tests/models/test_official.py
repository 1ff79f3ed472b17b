"""Official weights through our models: the golden fixtures of tests/fixtures/official (small models built,
initialised and run by the official code, see its README) imported with `maetok import-official` must give
the official outputs to 1e-5 (fp32, one thread, eval mode, no autocast); broken files must give errors
that name the problem. docs/official_weights.md describes the mapping."""

import argparse
import functools
import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from maetok import config as C
from maetok.cli import main
from maetok.models import official
from maetok.models.io import load_generator, load_tokenizer
from maetok.models.official import OfficialWeightsError
from maetok.models.tokenizer import MAETok_models
from maetok.transport import Transport

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "official"
TOK, TOK_IO = FIXTURES / "tokenizer_small.safetensors", FIXTURES / "tokenizer_small_io.safetensors"
SIT, SIT_IO = FIXTURES / "sit_small.safetensors", FIXTURES / "sit_small_io.safetensors"
ATOL = 1e-5
# The official tensors that inference never reads (fixture README, "parameters with no effect"), plus the
# RoPE grid buffers our model recomputes: what the importer drops.
UNUSED = {"encoder.freqs_t_x", "encoder.freqs_t_y", "decoder.freqs_t_x", "decoder.freqs_t_y",
          "decoder.model.pos_embed", "decoder.model.patch_embed.proj.weight", "decoder.model.patch_embed.proj.bias",
          "decoder.model.norm.adaLN_modulation.1.weight", "decoder.model.norm.adaLN_modulation.1.bias"}


pytestmark = pytest.mark.usefixtures("one_thread")  # the official fixtures were computed on one thread


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Both fixtures imported through the CLI: {"tokenizer": path, "generator": path}."""
    d = tmp_path_factory.mktemp("official")
    out = {"tokenizer": d / "tokenizer.safetensors", "generator": d / "sit.safetensors"}
    assert main(["import-official", "tokenizer", str(TOK), "--out", str(out["tokenizer"])]) == 0
    assert main(["import-official", "generator", str(SIT), "--out", str(out["generator"]),
                 "--latent-mean", "0.25", "--latent-std", "2.0"]) == 0
    return out


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


def set_sdpa(model, on):
    for m in model.modules():
        if hasattr(m, "use_sdpa"):
            m.use_sdpa = on


# --------------------------------------------------------------------------------------------
# Numerical equality with the official code
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sdpa", [True, False], ids=["sdpa", "explicit"])
def test_tokenizer_reproduces_official_outputs(imported, sdpa):
    """z, the encoder's latent rows and the reconstructions, through the file our loaders read. SDPA is our
    default; the official code takes the explicit softmax path."""
    model, cfg, _ = load_tokenizer(imported["tokenizer"])
    assert cfg.model.size == "MAETok-Fixture" and not model.training
    set_sdpa(model, sdpa)
    io = load_file(TOK_IO)
    with torch.no_grad():
        assert max_diff(model.encoder(io["x"]), io["enc_tokens"]) < ATOL
        assert max_diff(model.encode(io["x"]), io["z"]) < ATOL
        assert max_diff(model.decode(io["z"]), io["recon"]) < ATOL
        assert max_diff(model(io["x"])["x_rec"], io["recon_forward"]) < ATOL
        assert max_diff(model.decode(io["z_rand"]), io["recon_from_z_rand"]) < ATOL
    # The tolerance is far below what the outputs depend on: the two images, and z vs z_rand, differ by more.
    assert max_diff(io["z"][0], io["z"][1]) > 100 * ATOL
    assert max_diff(io["recon"], io["recon_from_z_rand"]) > 100 * ATOL


def test_tokenizer_hidden_states_and_rope_match(imported):
    """Block by block (encoder rows [cls | 16 image | 8 latent], decoder rows [16 image | 8 latent]) and the
    RoPE rotation of the image rows: a mismatch shows where, not only that."""
    model, _, _ = load_tokenizer(imported["tokenizer"])
    io = load_file(TOK_IO)
    seen = {}

    def keep(name):
        return lambda module, args, out: seen.__setitem__(name, out)

    for i, block in enumerate(model.encoder.blocks):
        block.register_forward_hook(keep(f"hidden.enc.block{i}.out"))
    for i, block in enumerate(model.decoder.blocks):
        block.register_forward_hook(keep(f"hidden.dec.block{i}.out"))
    model.encoder.norm.register_forward_hook(keep("hidden.enc.norm.out"))
    model.decoder.norm.register_forward_hook(keep("hidden.dec.norm.out"))
    with torch.no_grad():
        model.encode(io["x"])
        model.decode(io["z"])
    assert len(seen) == 2 + 3 + 2
    for name, value in seen.items():
        ref = io[name][:, : value.shape[1]]  # our decoder normalises the 16 image rows only
        assert max_diff(value, ref) < ATOL, name
    for part, prefix in (("enc", 1), ("dec", 0)):
        rope = getattr(model, {"enc": "encoder", "dec": "decoder"}[part]).rope
        cos, sin = rope((4, 4), prefix, 8)  # (depth, heads, T, pairs)
        ref = io[f"{part}_rope_cis_real"]  # (depth, heads, 16 image tokens, pairs, [cos, sin])
        assert max_diff(cos[:, :, prefix : prefix + 16], ref[..., 0]) < 1e-6
        assert max_diff(sin[:, :, prefix : prefix + 16], ref[..., 1]) < 1e-6


def test_sit_reproduces_official_outputs(imported):
    model, cfg, info = load_generator(imported["generator"])
    assert cfg.size == "SiT-Fixture/1" and not model.training
    io = load_file(SIT_IO)
    seen = {}
    model.blocks[0].register_forward_hook(lambda m, a, out: seen.__setitem__("block0", out))
    with torch.no_grad():
        assert max_diff(model(io["x"], io["t"], io["y"]), io["out"]) < ATOL
        assert max_diff(seen["block0"], io["hidden.blocks.0.out"]) < ATOL
        assert max_diff(model.t_embedder(io["t"]), io["t_embed"]) < ATOL
        assert max_diff(model.y_embedder(io["y"], False), io["y_embed"]) < ATOL
        # CFG batch [x; x], labels [y; null]: the official null label 1000 is our `null_label`
        assert io["cfg_in_y"][2:].eq(model.null_label).all()
        assert max_diff(model(io["cfg_in_x"], io["cfg_in_t"], io["cfg_in_y"]), io["cfg_doubled_out"]) < ATOL
        null = torch.full_like(io["y"], model.null_label)
        assert max_diff(model(io["x"], io["t"], null), io["out"]) > 100 * ATOL  # the label matters


@pytest.mark.parametrize(("name", "steps", "scale", "interval"), [
    ("euler_steps1_cfg1.5", 1, 1.5, (0.0, 1.0)),
    ("euler_steps4_cfg1.5", 4, 1.5, (0.0, 1.0)),
    ("euler_steps4_cfg1.5_glow0_ghigh0.75", 4, 1.5, (0.0, 0.75)),
    ("euler_steps4_nocfg", 4, 1.0, (0.0, 1.0)),
])
def test_euler_sampler_matches_official(imported, name, steps, scale, interval):
    """Our Euler ODE sampler with guidance on v in the closed t-interval = the official `euler_sampler`
    (t = 1 noise -> 0; float64 state, fp32 model)."""
    model, _, _ = load_generator(imported["generator"])
    io = load_file(SIT_IO)
    fn = functools.partial(model.forward_with_cfg, cfg_scale=scale, cfg_interval=interval)
    with torch.no_grad():
        x0 = Transport("linear").sample_ode(steps)(io["x"], fn, y=io["y"])
    assert max_diff(x0, io[name]) < ATOL


def test_euler_maruyama_sampler_matches_official(imported):
    """The official SDE grid [1, 0.52, 0.04, 0] for 3 steps, fed the official sampler's two noise draws."""
    model, _, _ = load_generator(imported["generator"])
    io = load_file(SIT_IO)
    noise = iter([io["em_steps3_cfg1.5_noise0"], io["em_steps3_cfg1.5_noise1"]])
    fn = functools.partial(model.forward_with_cfg, cfg_scale=1.5, cfg_interval=(0.0, 1.0))
    with torch.no_grad():
        x0 = Transport("linear").sample_sde(3, 0.04)(io["x"], fn, noise_fn=lambda x: next(noise), y=io["y"])
    assert next(noise, None) is None  # exactly two noisy steps
    assert max_diff(x0, io["em_steps3_cfg1.5"]) < ATOL


# --------------------------------------------------------------------------------------------
# The imported files are ours
# --------------------------------------------------------------------------------------------
def test_imported_files_carry_config_and_source(imported):
    _, cfg, info = load_tokenizer(imported["tokenizer"])
    params = C.load_params()
    base = params.tokenizer("maetok_main", "paper")
    assert cfg.optim == base.optim and cfg.loss == base.loss  # the variant's settings besides the architecture
    m = cfg.model
    assert (m.pos_embed, m.enc_abs_pos, m.decoder_block, m.bottleneck) == ("rope_mixed", True, "modulated", "ae")
    assert (m.num_latent_tokens, m.latent_dim, info["image_size"]) == (8, 32, 64)
    assert info["official"]["sha256"] == hashlib.sha256(TOK.read_bytes()).hexdigest()
    assert sum(info["official"]["dropped"].values()) == len(UNUSED)

    _, gcfg, ginfo = load_generator(imported["generator"])
    assert gcfg.transport == params.generator("sit_xl", "paper").transport
    assert (ginfo["num_tokens"], ginfo["latent_dim"], ginfo["num_classes"]) == (16, 32, 1000)
    assert ginfo["latent_stats"]["mean"] == 0.25 and ginfo["latent_stats"]["std"] == 2.0
    assert ginfo["latent_stats"]["channel_std"] == [2.0] * 32
    assert ginfo["tokenizer_sha256"] == ""  # no --tokenizer given


def test_dropped_keys_are_exactly_the_unused_ones():
    _, _, _, dropped = official.convert_tokenizer(load_file(TOK), C.load_params().tokenizer("maetok_main", "paper"))
    assert {k for keys in dropped.values() for k in keys} == UNUSED


def test_export_round_trip(imported, tmp_path):
    """ours -> official gives back every fixture tensor the official forward reads (the unused ones as zeros);
    official -> ours of that export is our file again."""
    ref = load_file(TOK)
    out = tmp_path / "export.bin"
    assert main(["export-official", "tokenizer", str(imported["tokenizer"]), "--out", str(out)]) == 0
    exported = torch.load(out, weights_only=True)
    assert set(exported) == set(ref)
    for key, value in ref.items():
        if key.startswith(("encoder.freqs_t", "decoder.freqs_t")):
            assert torch.equal(exported[key], value), key  # the raster grid, recomputed
        elif key in UNUSED:
            assert exported[key].shape == value.shape and not exported[key].any(), key
        else:
            assert torch.equal(exported[key], value), key
    again = tmp_path / "again.safetensors"
    assert main(["import-official", "tokenizer", str(out), "--out", str(again)]) == 0
    first, second = load_file(imported["tokenizer"]), load_file(again)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    sit_out = tmp_path / "sit.safetensors"
    assert main(["export-official", "generator", str(imported["generator"]), "--out", str(sit_out)]) == 0
    ref, exported = load_file(SIT), load_file(sit_out)
    assert ref.keys() == exported.keys() and all(torch.equal(ref[k], exported[k]) for k in ref)


def test_training_only_tensors_of_a_release_are_dropped(tmp_path):
    """A `MaskAEModel` file as the official training saves it: besides AEModel's tensors it holds the REPA
    projector and teacher, the SigLIP teacher, the HOG filters and three aux decoders. The importer drops
    them, picks the registry size (here MAETok-XS, patch 8) and keeps the function bit for bit."""
    torch.manual_seed(0)
    ours = MAETok_models["MAETok-XS"]().eval()
    state = official.export_tokenizer(ours)
    extras = {"projection.0.weight": (1024, 32), "repa_model.blocks.0.norm1.weight": (1024,),
              "clip_model.trunk.pos_embed": (1, 256, 1152), "hog_generator.weight_x": (3, 1, 3, 3),
              "decoder_hog.model.blocks.0.attn.qkv.weight": (576, 192), "post_quant_conv_dino.weight": (192, 32),
              "to_pixel_clip.bias": (1152,)}
    state |= {k: torch.zeros(shape) for k, shape in extras.items()}
    path = tmp_path / "maskae.pth"
    torch.save({"ema": state, "model": state, "steps": 500_000}, path)
    out = tmp_path / "ours.safetensors"
    assert main(["import-official", "tokenizer", str(path), "--out", str(out)]) == 0
    model, cfg, info = load_tokenizer(out)
    assert cfg.model.size == "MAETok-XS" and info["official"]["step"] == 500_000
    assert sum(info["official"]["dropped"].values()) == len(UNUSED) + len(extras)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        assert torch.equal(model.encode(x), z) and torch.equal(model.decode(z), ours.decode(z))


def test_export_refuses_architectures_without_official_layout(tmp_path):
    with pytest.raises(OfficialWeightsError, match="decoder_block 'modulated'"):
        official.export_tokenizer(MAETok_models["MAETok-XS"](decoder_block="plain"))
    with pytest.raises(OfficialWeightsError, match="enc_abs_pos"):
        official.export_tokenizer(MAETok_models["MAETok-XS"](enc_abs_pos=False))
    from maetok.models.sit import SiT_models

    with pytest.raises(OfficialWeightsError, match="LightningDiT"):
        official.export_generator(SiT_models["LightningDiT-T/1"](num_tokens=4, in_channels=4, num_classes=2))


def test_latent_normalisation_from_official_config(tmp_path):
    """vq_mean / vq_std of the tokenizer's config.json travel through the tokenizer import into the SiT
    import, which also checks the tokenizer's latent shape and records its sha256."""
    torch.manual_seed(0)
    ours = MAETok_models["MAETok-Fixture"](num_latent_tokens=16)  # the fixture SiT's 16 tokens
    src = tmp_path / "tok.safetensors"
    official.write_official(official.export_tokenizer(ours), src)
    cfg_json = tmp_path / "config.json"
    cfg_json.write_text('{"image_size": 64, "num_latent_tokens": 16, "codebook_embed_dim": 32, '
                        '"vq_mean": -0.1, "vq_std": 0.7}')
    tok = tmp_path / "tokenizer.safetensors"
    assert main(["import-official", "tokenizer", str(src), "--out", str(tok), "--official-config", str(cfg_json)]) == 0
    sit = tmp_path / "sit.safetensors"
    assert main(["import-official", "generator", str(SIT), "--out", str(sit), "--tokenizer", str(tok)]) == 0
    _, _, info = load_generator(sit)
    assert (info["latent_stats"]["mean"], info["latent_stats"]["std"]) == (-0.1, 0.7)
    assert info["tokenizer_sha256"] == hashlib.sha256(tok.read_bytes()).hexdigest()
    with torch.no_grad():  # and the round trip through the official layout kept the function
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        assert torch.equal(ours.eval().encode(x), load_tokenizer(tok)[0].encode(x))

    cfg_json.write_text('{"image_size": 256, "vq_mean": 0.0, "vq_std": 1.0}')
    with pytest.raises(OfficialWeightsError, match="image_size = 256"):
        official.import_tokenizer(src, tmp_path / "x.safetensors", C.load_params().tokenizer("maetok_main", "paper"),
                                  official_config=cfg_json)


# --------------------------------------------------------------------------------------------
# Files that must not import, and wrappers that must
# --------------------------------------------------------------------------------------------
def _cli_error(capsys, *argv):
    assert main(["import-official", *map(str, argv)]) == 2
    return capsys.readouterr().err


def _edited(tmp_path, src, edit, name="edited.safetensors"):
    state = load_file(src)
    edit(state)
    path = tmp_path / name
    save_file(state, str(path))
    return path


def test_corrupted_files(tmp_path, capsys):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(TOK.read_bytes()[: TOK.stat().st_size // 2])
    err = _cli_error(capsys, "tokenizer", cut, "--out", tmp_path / "o.safetensors")
    assert "unreadable safetensors file" in err and "download it again" in err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 64)
    err = _cli_error(capsys, "tokenizer", garbage, "--out", tmp_path / "o.safetensors")
    assert "unreadable checkpoint" in err and "download it again" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_file_of_the_wrong_model(tmp_path, capsys):
    err = _cli_error(capsys, "tokenizer", SIT, "--out", tmp_path / "o.safetensors")
    assert "holds an official generator, not a tokenizer" in err and "import-official generator" in err
    err = _cli_error(capsys, "generator", TOK, "--out", tmp_path / "o.safetensors", "--latent-mean", "0",
                     "--latent-std", "1")
    assert "holds an official tokenizer, not a generator" in err

    def unrelated(s):
        for k in list(s):
            s[f"net.{k}"] = s.pop(k)

    other = _edited(tmp_path, SIT, unrelated)
    err = _cli_error(capsys, "generator", other, "--out", tmp_path / "o.safetensors")
    assert "neither an official MAETok tokenizer" in err
    ours = tmp_path / "ours.safetensors"
    assert main(["import-official", "tokenizer", str(TOK), "--out", str(ours)]) == 0
    err = _cli_error(capsys, "tokenizer", ours, "--out", tmp_path / "o.safetensors")
    assert "already in this project's layout" in err


def test_shape_mismatch_names_the_key(tmp_path, capsys):
    def shrink(s):
        s["encoder.model.blocks.1.mlp.fc1.weight"] = s["encoder.model.blocks.1.mlp.fc1.weight"][:700]

    err = _cli_error(capsys, "tokenizer", _edited(tmp_path, TOK, shrink), "--out", tmp_path / "o.safetensors")
    assert "encoder.model.blocks.1.mlp.fc1.weight has shape (700, 192), expected (768, 192)" in err
    assert "MAETok-Fixture" in err  # the closest registry size


def test_missing_and_unknown_keys_are_named(tmp_path, capsys):
    path = _edited(tmp_path, TOK, lambda s: s.pop("decoder.model.blocks.2.attn.proj.bias"))
    err = _cli_error(capsys, "tokenizer", path, "--out", tmp_path / "o.safetensors")
    assert "missing decoder.model.blocks.2.attn.proj.bias" in err
    path = _edited(tmp_path, TOK, lambda s: s.update({"encoder.model.blocks.0.attn.q_norm.weight": torch.ones(64)}))
    err = _cli_error(capsys, "tokenizer", path, "--out", tmp_path / "o.safetensors")
    assert "does not have: encoder.model.blocks.0.attn.q_norm.weight" in err
    path = _edited(tmp_path, SIT, lambda s: s.pop("blocks.1.mlp.fc2.bias"))
    err = _cli_error(capsys, "generator", path, "--out", tmp_path / "o.safetensors", "--latent-mean", "0",
                     "--latent-std", "1")
    assert "missing blocks.1.mlp.fc2.bias" in err


def test_architectures_our_config_cannot_express(tmp_path, capsys):
    # A consistent one-block SiT: no registry size has that depth.
    path = _edited(tmp_path, SIT, lambda s: [s.pop(k) for k in list(s) if k.startswith("blocks.1.")])
    err = _cli_error(capsys, "generator", path, "--out", tmp_path / "o.safetensors", "--latent-mean", "0",
                     "--latent-std", "1")
    assert "SiT 288 wide x 1 blocks" in err and "fits no size of the registry" in err and "SiT_models" in err
    # learn_sigma: twice the latent channels out
    path = _edited(tmp_path, SIT, lambda s: s.update({k: torch.cat([s[k], s[k]]) for k in
                                                      ("final_layer.linear.weight", "final_layer.linear.bias")}))
    err = _cli_error(capsys, "generator", path, "--out", tmp_path / "o.safetensors")
    assert "learn_sigma" in err
    # a decoder cls token; a RoPE grid that is not the raster grid
    path = _edited(tmp_path, TOK, lambda s: s.update({"decoder.model.cls_token": torch.zeros(1, 1, 128)}))
    assert "dec_cls_token" in _cli_error(capsys, "tokenizer", path, "--out", tmp_path / "o.safetensors")
    path = _edited(tmp_path, TOK, lambda s: s.update({"encoder.freqs_t_x": s["encoder.freqs_t_y"].clone()}))
    assert "encoder.freqs_t_x is not the raster grid" in _cli_error(capsys, "tokenizer", path, "--out",
                                                                     tmp_path / "o.safetensors")


def test_unknown_latent_normalisation_is_an_error(tmp_path, capsys):
    err = _cli_error(capsys, "generator", SIT, "--out", tmp_path / "o.safetensors")
    assert "--latent-mean" in err and "vq_mean" in err
    tok = tmp_path / "tok.safetensors"
    assert main(["import-official", "tokenizer", str(TOK), "--out", str(tok)]) == 0
    err = _cli_error(capsys, "generator", SIT, "--out", tmp_path / "o.safetensors", "--tokenizer", tok)
    assert "(L, H) = (8, 32)" in err and "(16, 32)" in err


class NotAllowed:
    """An object torch.load(weights_only=True) must refuse."""


def test_training_checkpoint_wrappers(tmp_path, capsys):
    """A .pt training checkpoint: the EMA is taken, its step recorded, DDP's `module.` prefix removed, and the
    argparse Namespace the official scripts store next to the weights is allowed; other objects are refused."""
    state = load_file(SIT)
    ckpt = {"model": {k: torch.zeros_like(v) for k, v in state.items()},
            "ema": {f"module.{k}": v for k, v in state.items()},
            "args": argparse.Namespace(model="SiT-XL/1"), "steps": 1234}
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    out = tmp_path / "sit.safetensors"
    assert main(["import-official", "generator", str(path), "--out", str(out), "--latent-mean", "0",
                 "--latent-std", "1"]) == 0
    model, _, info = load_generator(out)
    assert info["step"] == 1234
    assert torch.equal(model.final_layer.linear.weight, state["final_layer.linear.weight"])  # the EMA, not zeros
    out_model = tmp_path / "model.safetensors"
    assert main(["import-official", "generator", str(path), "--out", str(out_model), "--state-key", "model",
                 "--latent-mean", "0", "--latent-std", "1"]) == 0
    assert not load_generator(out_model)[0].final_layer.linear.weight.any()

    torch.save({"ema": state, "args": NotAllowed()}, path)
    err = _cli_error(capsys, "generator", path, "--out", out, "--latent-mean", "0", "--latent-std", "1")
    assert "weights_only=True" in err
    torch.save({"weights": state}, path)
    err = _cli_error(capsys, "generator", path, "--out", out)
    assert "no state dict under ['ema', 'model', 'state_dict']" in err and "--state-key" in err


def test_fixture_architecture_registry_entries():
    """The fixture sizes are what the fixture README says the official code built (encoder and decoder
    widths differ on purpose)."""
    with torch.device("meta"):
        tok = MAETok_models["MAETok-Fixture"]()
    enc, dec = tok.encoder, tok.decoder
    assert (enc.cls_token.shape[-1], len(enc.blocks), enc.blocks[0].attn.num_heads) == (192, 2, 3)
    assert (dec.head.in_features, len(dec.blocks), dec.blocks[0].attn.num_heads) == (128, 3, 2)
