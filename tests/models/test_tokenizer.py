"""MAETok tokenizer: parameter counts vs the official code, every size and variant trains, masking
law, RoPE properties, SDPA vs explicit attention, mixed resolution, and clear errors."""

import math

import pytest
import torch
import torch.nn as nn

from maetok.models.aux_decoders import masked_loss, resample_teacher_features
from maetok.models.blocks import Attention, Block, ModulatedBlock, Rope2D, apply_rope
from maetok.models.choices import AUX_DEPTHS, AUX_TARGETS
from maetok.models.masking import random_masking, sample_mask_ratio, truncnorm_mean
from maetok.models.tokenizer import MAETok_models as MODELS
from maetok.models.tokenizer import model_info, official_only_params

TINY = "MAETok-T"
FAKE_DIMS = {"dino": 24, "clip": 40}  # small stand-ins for the 1024 / 1152-d teachers


def fake_targets(batch, grid=8):
    """Random teacher features: a DINO-like (B, C, h, w) map on another grid, CLIP-like (B, N, C) tokens."""
    return {"dino": torch.randn(batch, FAKE_DIMS["dino"], 4, 4), "clip": torch.randn(batch, grid * grid, 40)}


def train_step(model, x, **kwargs):
    """One forward/backward; returns the output dict after checking shapes and finiteness."""
    out = model(x, **kwargs)
    loss = (out["x_rec"] - x).pow(2).mean() + sum(out["aux_loss"].values())
    if out["kl"] is not None:
        loss = loss + 1e-6 * out["kl"]
    loss.backward()
    assert out["x_rec"].shape == x.shape
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    return out


def perturb_modulation(model):
    """The zero-init adaLN hides z from the image tokens at init (official init); give it small weights."""
    for m in model.modules():
        if isinstance(m, ModulatedBlock):
            nn.init.normal_(m.adaLN_modulation[-1].weight, std=0.02)


# --- parameter counts -------------------------------------------------------------------------
def test_b16_matches_official_counts():
    """Spec §7: official encoder 86,069,760; quant_conv 24,608; post_quant_conv + decoder 25,344 +
    87,771,648 of which 838,656 are never used (patch_embed, pos_embed, final-norm modulation)."""
    with torch.device("meta"):
        model = MODELS["MAETok-B/16"](aux_targets=("hog", "dino", "clip"))
    info, extra = model_info(model), official_only_params(model)
    assert info["encoder"]["total"] == 86_069_760
    assert info["bottleneck"]["total"] == 24_608
    assert info["decoder"]["total"] == 25_344 + 87_771_648 - 838_656 == 86_958_336
    assert extra["decoder"] == 838_656
    official_tokenizer = info["tokenizer"]["total"] + extra["decoder"]
    assert official_tokenizer == 173_891_360
    assert abs(official_tokenizer / 173.9e6 - 1) < 0.003
    assert abs(info["tokenizer"]["total"] / 173.9e6 - 1) < 0.005  # 173.05M built, all of it used
    assert official_tokenizer + extra["repa_projector"] == 176_024_352  # the paper's "176M"
    # Aux decoders: 192 wide, 3 heads, 3 layers, heads of 108 / 1024 / 1152 (official count: 5,969,380).
    assert info["aux_decoders"]["total"] + extra["aux_decoders"] == 5_969_380
    assert abs(info["aux_decoders"]["total"] + extra["aux_decoders"] - 6.0e6) < 0.05e6
    assert info["aux_decoders"]["total"] == 4_760_812


def test_b16_paper_position_encoding_drops_cls_and_table():
    with torch.device("meta"):
        official = MODELS["MAETok-B/16"]()
        paper = MODELS["MAETok-B/16"](enc_abs_pos=False)
    diff = model_info(official)["encoder"]["total"] - model_info(paper)["encoder"]["total"]
    assert diff == 768 + 257 * 768  # cls token + (1 + 256) x 768 absolute table


def test_model_info_tracks_freezing():
    model = MODELS[TINY](aux_targets=("hog",))
    model.encoder.requires_grad_(False)
    info = model_info(model)
    assert info["encoder"]["trainable"] == 0 < info["encoder"]["total"]
    assert info["decoder"]["trainable"] == info["decoder"]["total"] > 0
    assert info["all"]["total"] == sum(p.numel() for p in model.parameters())


# --- every size and variant trains ------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_registry_sizes(name):
    torch.manual_seed(0)
    if name == "MAETok-B/16":  # too slow for a CPU test: build on meta and check the latent shape
        with torch.device("meta"):
            model = MODELS[name]()
        assert (model.num_latent_tokens, model.latent_dim, model.img_size) == (128, 32, 256)
        return
    model = MODELS[name](aux_targets=AUX_TARGETS, aux_dims=FAKE_DIMS)
    perturb_modulation(model)
    x = torch.rand(1, 3, model.img_size, model.img_size) * 2 - 1
    out = train_step(model, x, targets=fake_targets(1))
    assert out["z"].shape == (1, model.num_latent_tokens, model.latent_dim)
    assert set(out["aux_loss"]) == set(AUX_TARGETS)
    assert model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0  # aux and pixel losses reach the encoder


VARIANTS = {
    "ae": dict(mask_ratio_low=0.0, mask_ratio_high=0.0),
    "vae": dict(bottleneck="vae", mask_ratio_low=0.0, mask_ratio_high=0.0),
    "pixel": dict(aux_targets=("pixel",)),
    "hog": dict(aux_targets=("hog",)),
    "dino": dict(aux_targets=("dino",)),
    "clip": dict(aux_targets=("clip",)),
    "no_latent_tokens": dict(latent_tokens=False, aux_targets=("hog",)),
    "zero_latent_tokens": dict(num_latent_tokens=0),
    "ape": dict(pos_embed="ape", aux_targets=("hog",)),
    "ape_paper": dict(pos_embed="ape", enc_abs_pos=False),
    "rope_axial": dict(pos_embed="rope_axial", aux_targets=("hog",)),
    "rope_paper": dict(enc_abs_pos=False),
    "plain_decoder": dict(decoder_block="plain", aux_targets=("hog",)),
    "uniform_mask": dict(mask_ratio_dist="uniform"),
    "mse_dino": dict(aux_targets=("dino",), aux_losses={"dino": "mse"}),
    **{f"aux_depth_{d}": dict(aux_depth=d, aux_targets=("hog", "dino")) for d in AUX_DEPTHS},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tiny_variants(variant):
    torch.manual_seed(0)
    kwargs = VARIANTS[variant]
    model = MODELS[TINY](aux_dims=FAKE_DIMS, **kwargs).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = train_step(model, x, targets=fake_targets(2))
    L = 64 if variant.endswith("latent_tokens") else 32
    assert out["z"].shape == (2, L, 16)
    assert set(out["aux_loss"]) == set(kwargs.get("aux_targets", ()))
    assert all(pred.shape[:2] == (2, 64) for pred in out["aux_pred"].values())
    if kwargs.get("mask_ratio_high", 0.6) == 0:
        assert out["mask"] is None
    else:
        assert 0.4 * 64 <= out["mask"].sum(1).float().min() <= out["mask"].sum(1).float().max() <= 0.6 * 64 + 1
    assert (out["kl"] is not None) == (kwargs.get("bottleneck") == "vae")


def test_bf16_autocast_forward():
    """The official code fails here (HOG scatter_add under autocast; maetok/models/hog.py)."""
    torch.manual_seed(0)
    model = MODELS[TINY](aux_targets=("hog", "dino"), aux_dims=FAKE_DIMS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 3, 32, 32), targets=fake_targets(2))
    assert all(torch.isfinite(v) for v in out["aux_loss"].values())
    assert out["x_rec"].dtype == torch.bfloat16


def test_vae_kl_and_eval_determinism():
    torch.manual_seed(0)
    model = MODELS[TINY](bottleneck="vae")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z, kl = model.encode(x, return_kl=True)
    assert kl.ndim == 0 and kl > 0
    model.eval()
    torch.testing.assert_close(model.encode(x), model.encode(x))
    mean = model.bottleneck.proj(model.encoder(x)).chunk(2, dim=-1)[0]
    torch.testing.assert_close(model.encode(x), mean)


def test_modulated_decoder_ignores_z_at_init():
    """Zero-init adaLN (official init): at init the image tokens never see z."""
    torch.manual_seed(0)
    model = MODELS[TINY]().eval()
    z1, z2 = torch.randn(2, 2, 32, 16).unbind(0)
    torch.testing.assert_close(model.decode(z1), model.decode(z2))
    perturb_modulation(model)
    assert not torch.allclose(model.decode(z1), model.decode(z2))


@pytest.mark.parametrize("pos_embed", ["rope_mixed", "rope_axial", "ape"])
def test_other_resolution_at_inference(pos_embed):
    """Paper Table 13b: a model trained at 32 px encodes and decodes 64 px and 48 x 32 images."""
    torch.manual_seed(0)
    model = MODELS[TINY](pos_embed=pos_embed).eval()
    for size in ((64, 64), (48, 32)):
        x = torch.rand(1, 3, *size) * 2 - 1
        z = model.encode(x)
        assert z.shape == (1, 32, 16)
        assert model.decode(z, img_size=size).shape == (1, 3, *size)


def test_no_latent_tokens_at_other_resolution():
    model = MODELS[TINY](latent_tokens=False).eval()
    z = model.encode(torch.rand(1, 3, 64, 64))
    assert z.shape == (1, 256, 16)
    assert model.decode(z, img_size=64).shape == (1, 3, 64, 64)


def test_patchify_roundtrip():
    model = MODELS[TINY]()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.unpatchify(model.patchify(x), (8, 8)), x)


# --- masking ----------------------------------------------------------------------------------
def test_mask_ratio_truncnorm_law():
    g = torch.Generator().manual_seed(0)
    r = torch.tensor([sample_mask_ratio(0.4, 0.6, generator=g) for _ in range(20000)])
    assert r.min() >= 0.4 and r.max() <= 0.6
    assert abs(truncnorm_mean(0.4, 0.6) - 0.5052) < 5e-4  # the official sampler's empirical mean: 0.505
    assert abs(r.mean().item() - truncnorm_mean(0.4, 0.6)) < 0.003
    assert (r > 0.5).float().mean() > 0.5  # density rises towards the upper end
    u = torch.tensor([sample_mask_ratio(0.4, 0.6, "uniform", generator=g) for _ in range(20000)])
    assert u.min() >= 0.4 and u.max() <= 0.6 and abs(u.mean().item() - 0.5) < 0.003
    assert sample_mask_ratio(0.4, 0.4) == 0.4


def test_mask_ratio_errors():
    with pytest.raises(ValueError, match="mask_ratio_low.*mask_ratio_high"):
        sample_mask_ratio(0.7, 0.6)
    with pytest.raises(ValueError, match="mask_ratio_low.*mask_ratio_high"):
        MODELS[TINY](mask_ratio_low=0.7, mask_ratio_high=0.6)
    with pytest.raises(ValueError, match="mask_ratio_dist"):
        sample_mask_ratio(0.4, 0.6, "beta")


def test_random_masking_counts():
    g = torch.Generator().manual_seed(0)
    mask = random_masking(4, 64, 0.45, generator=g)
    assert mask.dtype == torch.bool and mask.shape == (4, 64)
    assert (mask.sum(1) == math.ceil(64 * 0.45)).all()
    assert not (mask[0] == mask[1]).all()


def test_masking_only_in_train_mode_and_fixed_ratio():
    model = MODELS[TINY]()
    x = torch.zeros(3, 3, 32, 32)
    assert model.train().sample_mask(x) is not None
    assert model.eval().sample_mask(x) is None
    assert model.sample_mask(x, mask_ratio=0.0) is None
    assert (model.sample_mask(x, mask_ratio=0.25).sum(1) == 16).all()  # stage 2 anneal: a fixed ratio


def test_mask_token_replaces_masked_patches_only():
    """Changing a masked patch's pixels cannot change the encoding; changing a visible one does."""
    torch.manual_seed(0)
    model = MODELS[TINY]().eval()
    x = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 64, dtype=torch.bool)
    mask[0, 0] = True  # the top-left 4 x 4 patch
    x2 = x.clone()
    x2[..., :4, :4] += 1.0
    torch.testing.assert_close(model.encode(x, mask), model.encode(x2, mask))
    assert not torch.allclose(model.encode(x), model.encode(x2))


# --- aux losses and targets -------------------------------------------------------------------
def test_masked_loss_uses_masked_tokens():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 8, 5), torch.randn(2, 8, 5)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :3] = True
    changed = pred.clone()
    changed[:, 3:] += 10.0
    assert masked_loss(pred, target, mask, "mse") == masked_loss(changed, target, mask, "mse")
    torch.testing.assert_close(masked_loss(pred, target, mask, "mse"), (pred - target)[:, :3].pow(2).mean())
    torch.testing.assert_close(masked_loss(target * 3, target, mask, "cosine"), torch.tensor(-1.0))
    torch.testing.assert_close(masked_loss(pred, target, None, "mse"), (pred - target).pow(2).mean())


def test_resample_teacher_features():
    grid_map = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(2, 3, 1, 1)  # (B, C, 4, 4)
    assert resample_teacher_features(grid_map, (8, 8)).shape == (2, 64, 3)
    torch.testing.assert_close(resample_teacher_features(grid_map, (4, 4)), grid_map.flatten(2).transpose(1, 2))
    tokens = torch.cat([torch.full((2, 1, 3), 99.0), torch.ones(2, 64, 3)], dim=1)  # cls + 8 x 8 grid
    torch.testing.assert_close(resample_teacher_features(tokens, (4, 4), num_prefix_tokens=1), torch.ones(2, 16, 3))


def test_callable_teacher_and_missing_features():
    torch.manual_seed(0)
    model = MODELS[TINY](aux_targets=("dino",), aux_dims={"dino": 6})
    x = torch.rand(2, 3, 32, 32)
    teacher = lambda img: torch.randn(img.shape[0], 1 + 16, 6)[:, 1:]  # a 4 x 4 token grid
    assert model(x, targets={"dino": teacher})["aux_pred"]["dino"].shape == (2, 64, 6)
    with pytest.raises(KeyError, match="dino"):
        model(x)


# --- RoPE and attention -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["axial", "mixed"])
def test_rope_scores_depend_on_offset_only(mode):
    torch.manual_seed(0)
    rope = Rope2D(depth=2, num_heads=3, head_dim=16, mode=mode, theta=10.0)
    cos, sin = rope((4, 5), num_prefix=1, num_suffix=2)  # (depth or 1, heads or 1, 1 + 20 + 2, 8)
    assert cos.shape[-2:] == (23, 8)
    # Prefix and latent rows are not rotated.
    assert (cos[..., :1, :] == 1).all() and (sin[..., -2:, :] == 0).all()
    q, k = torch.randn(2, 3, 1, 16), torch.randn(2, 3, 1, 16)  # the same content at every position
    qr = apply_rope(q.expand(-1, -1, 23, -1), cos[-1], sin[-1])[:, :, 1:21]
    kr = apply_rope(k.expand(-1, -1, 23, -1), cos[-1], sin[-1])[:, :, 1:21]
    scores = qr @ kr.transpose(-2, -1)  # (B, heads, 20, 20)
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    pos = torch.stack([xs.flatten(), ys.flatten()], dim=-1)
    offsets = (pos[:, None] - pos[None]).reshape(-1, 2)
    flat = scores.flatten(2)
    for dx, dy in {tuple(o.tolist()) for o in offsets}:
        same = ((offsets[:, 0] == dx) & (offsets[:, 1] == dy)).nonzero().squeeze(1)
        torch.testing.assert_close(flat[..., same], flat[..., same[:1]].expand(-1, -1, len(same)))
    assert not torch.allclose(flat[..., 0], flat[..., 1])  # but the scores do change with the offset


def test_rope_mixed_init_and_learnable():
    rope = Rope2D(depth=2, num_heads=3, head_dim=64, mode="mixed", theta=10.0)
    assert isinstance(rope.freqs, nn.Parameter) and rope.freqs.shape == (2, 2, 3, 32)
    norms = rope.freqs.norm(dim=0)  # |(Fx, Fy)| per pair = theta^(-4k/d), k = 0..15, twice
    expected = 10.0 ** (-torch.arange(16) / 16)
    torch.testing.assert_close(norms, torch.cat([expected, expected]).expand(2, 3, 32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sdpa_helper_matches_torch_and_picks_math_for_cpu_bf16_training(dtype):
    """bf16 training on CPU takes PyTorch's math kernel (bit for bit as under sdpa_kernel(MATH),
    gradients included); fp32 and inference keep PyTorch's own choice."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from maetok.models.attention import sdpa

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 16, dtype=dtype, requires_grad=True) for _ in range(3))
    with sdpa_kernel(SDPBackend.MATH):
        math_out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    math_grads = torch.autograd.grad(math_out.float().sum(), (q, k, v))
    out = sdpa(q, k, v)
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    if dtype == torch.bfloat16:
        assert torch.equal(out, math_out) and all(map(torch.equal, grads, math_grads))
    else:
        assert torch.equal(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
    with torch.no_grad():  # inference keeps PyTorch's kernel choice
        assert torch.equal(sdpa(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_compiled_bf16_block_graph_is_cacheable():
    """The graph Dynamo captures of a block in bf16 training passes AOTAutograd's cacheability check
    (an `sdpa_kernel` context in the graph fails it, and every job would then re-trace each block's
    joint graph instead of loading it from the on-disk cache)."""
    from torch._functorch._aot_autograd.autograd_cache import BypassAOTAutogradCache, check_cacheable

    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    block = Block(32, 2)
    block.compile(backend=capture)
    x = torch.randn(2, 9, 32, requires_grad=True)
    rope = Rope2D(depth=1, num_heads=2, head_dim=16)((3, 3))  # a 3x3 grid: (1, heads, 9, 8)
    with torch.autocast("cpu", torch.bfloat16):
        block(x, rope=rope).float().sum().backward()
    assert graphs
    for gm in graphs:
        try:
            check_cacheable(gm)
        except BypassAOTAutogradCache as e:
            pytest.fail(f"AOTAutograd would not cache the block: {e}")


def test_sdpa_equals_explicit_softmax():
    torch.manual_seed(0)
    attn = Attention(64, 4)
    rope = Rope2D(1, 4, 16, "mixed")((4, 4), 0, 3)
    x = torch.randn(2, 19, 64)
    fused = attn(x, (rope[0][0], rope[1][0]))
    attn.use_sdpa = False
    torch.testing.assert_close(fused, attn(x, (rope[0][0], rope[1][0])), atol=1e-5, rtol=1e-5)

    model = MODELS[TINY]().eval()
    perturb_modulation(model)
    x = torch.rand(2, 3, 32, 32)
    ref = model.decode(model.encode(x))
    for m in model.modules():
        if isinstance(m, Attention):
            m.use_sdpa = False
    torch.testing.assert_close(model.decode(model.encode(x)), ref, atol=1e-5, rtol=1e-5)



@pytest.mark.parametrize("kwargs", [{}, {"decoder_block": "plain", "pos_embed": "ape"},
                                    {"pos_embed": "rope_axial"}, {"latent_tokens": False}])
def test_grouped_aux_decoders_equal_one_by_one(kwargs):
    """The aux decoders' batched pass over stacked weights computes what each decoder computes
    alone, forward and backward, and leaves the state_dict layout as it was."""
    torch.manual_seed(0)
    model = MODELS[TINY](aux_targets=("pixel", "hog", "dino"), aux_dims=FAKE_DIMS, **kwargs)
    perturb_modulation(model)
    with torch.no_grad():  # LayerScale starts at 1e-5: make the plain blocks' branches count
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.normal_(0, 0.1)
    z = torch.randn(3, model.num_latent_tokens, model.latent_dim)
    keys = list(model.state_dict())
    results = []
    for grouped in (False, True):
        model.aux_decoders.grouped = grouped
        model.zero_grad()
        out = model.aux_decoders(z, (8, 8))
        sum(v.pow(2).mean() for v in out.values()).backward()
        results.append((out, {n: p.grad.clone() for n, p in model.aux_decoders.named_parameters()}))
    (ref, ref_grads), (got, got_grads) = results
    assert list(got) == ["pixel", "hog", "dino"] and got["dino"].shape == (3, 64, FAKE_DIMS["dino"])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grads, ref_grads, atol=1e-5, rtol=1e-4)
    assert list(model.state_dict()) == keys

# --- errors -----------------------------------------------------------------------------------
def test_image_size_not_divisible():
    with pytest.raises(ValueError, match="image size 30x30 is not divisible by patch size 4"):
        MODELS[TINY](img_size=30)
    model = MODELS[TINY]()
    with pytest.raises(ValueError, match="image size 30x30 is not divisible by patch size 4"):
        model(torch.rand(1, 3, 30, 30))


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="'sift'.*'pixel', 'hog', 'dino', 'clip'"):
        MODELS[TINY](aux_targets=("sift",))
    with pytest.raises(ValueError, match="pos_embed.*rope_mixed"):
        MODELS[TINY](pos_embed="sincos")
    with pytest.raises(ValueError, match="aux_depth.*linear"):
        MODELS[TINY](aux_depth=2)
    with pytest.raises(ValueError, match="'l1'.*'mse', 'cosine'"):
        MODELS[TINY](aux_targets=("dino",), aux_losses={"dino": "l1"})
