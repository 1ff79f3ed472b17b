import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from maetok.models.sit import (
    SiT_models,
    apply_rope,
    classifier_free_guidance,
    forward_gflops,
    model_info,
    rope_cos_sin,
    sincos_pos_embed_1d,
)

TINY_KEYS = [k for k in SiT_models if k.endswith("-T/1")]
TINY = {"in_channels": 8, "num_tokens": 16, "num_classes": 10}
PAPER = {"in_channels": 32, "num_tokens": 128, "num_classes": 1000}


def _tiny(key, **kw):
    torch.manual_seed(0)
    return SiT_models[key](**{**TINY, **kw})


def _randomize_zero_init(model):
    """adaLN-Zero makes a fresh model output 0; perturb every parameter to test wiring."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, TINY["num_tokens"], TINY["in_channels"], generator=g)
    t = torch.rand(batch, generator=g)
    y = torch.randint(0, TINY["num_classes"], (batch,), generator=g)
    return x, t, y


@pytest.mark.parametrize(("key", "total", "trainable"), [
    ("SiT-B/1", 130_426_400, 130_328_096),
    ("SiT-L/1", 457_988_128, 457_857_056),
    ("SiT-XL/1", 675_000_608, 674_853_152),
])
def test_param_counts_match_official(key, total, trainable):
    """Spec §5.1 / §7 (SiT-L 458M, SiT-XL 675M in the paper); the fixed PE is the gap."""
    with torch.device("meta"):
        model = SiT_models[key](**PAPER)
    assert model_info(model) == {"total": total, "trainable": trainable}
    assert total - trainable == model.pos_embed.numel()


@pytest.mark.parametrize("key", [k for k in SiT_models if k not in TINY_KEYS])
def test_forward_backward_meta(key):
    """Large sizes: shapes and autograd wiring at the paper's latent size, on meta."""
    with torch.device("meta"):
        model = SiT_models[key](**PAPER)
        x = torch.randn(2, 128, 32)
        out = model(x, torch.rand(2), torch.randint(0, 1000, (2,)))
        out.sum().backward()
    assert out.shape == (2, 128, 32)
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert model.pos_embed.grad is None


@pytest.mark.parametrize("key", TINY_KEYS)
def test_forward_backward_tiny(key):
    model = _tiny(key)
    x, t, y = _inputs()
    out = model(x, t, y)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: output layer starts at zero
    (x + out).pow(2).sum().backward()
    assert model.final_layer.linear.weight.grad.abs().sum() > 0
    assert model.pos_embed.grad is None

    _randomize_zero_init(model).zero_grad()
    out = model(x, t, y)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    out.pow(2).sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("key", TINY_KEYS)
def test_output_depends_on_t_y_and_position(key):
    model = _randomize_zero_init(_tiny(key)).eval()
    x, t, y = _inputs(batch=2)
    out = model(x, t, y)
    assert not torch.allclose(out, model(x, t + 0.3, y))
    assert not torch.allclose(out, model(x, t, (y + 1) % 10))
    # identical tokens at every position still give position-dependent outputs
    same = x[:, :1].expand_as(x).contiguous()
    out_same = model(same, t, y)
    assert not torch.allclose(out_same[:, 0], out_same[:, 1])


def test_label_dropout_only_in_train_mode():
    model = _randomize_zero_init(_tiny("SiT-T/1", class_dropout_prob=1.0))
    x, t, y = _inputs()
    null = torch.full_like(y, model.null_label)
    model.train()
    dropped = model(x, t, y)
    model.eval()
    torch.testing.assert_close(dropped, model(x, t, null))
    assert not torch.allclose(model(x, t, y), dropped)
    assert model.y_embedder.embedding_table.num_embeddings == TINY["num_classes"] + 1


def test_sincos_table_is_interleaved():
    pe = sincos_pos_embed_1d(8, 5)
    p = torch.arange(5.0)
    torch.testing.assert_close(pe[:, 0], torch.sin(p))
    torch.testing.assert_close(pe[:, 1], torch.cos(p))
    torch.testing.assert_close(pe[:, 2], torch.sin(p * 10000 ** (-2 / 8)))


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_cos_sin(12, 16)
    q, k = torch.randn(16), torch.randn(16)
    rq = apply_rope(q.expand(1, 1, 12, 16), cos, sin)[0, 0]
    rk = apply_rope(k.expand(1, 1, 12, 16), cos, sin)[0, 0]
    scores = rq @ rk.T  # (12, 12)
    torch.testing.assert_close(scores[2, 5], scores[6, 9])
    torch.testing.assert_close(scores[0, 0], q @ k)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(12))


def test_cfg_interval_with_dummy_model():
    """v_cond = 1, v_null = 0, so guided output = scale inside the interval, 1 outside."""
    calls = []

    def forward(x, t, y):
        calls.append(x.shape[0])
        return (y != 10).to(x.dtype).reshape(-1, 1, 1).expand_as(x)

    x = torch.zeros(5, 4, 2)
    t = torch.tensor([0.0, 0.5, 0.75, 0.8, 1.0])
    y = torch.arange(5)
    out = classifier_free_guidance(forward, x, t, y, 10, 1.9, (0.0, 0.75))
    expected = torch.tensor([1.9, 1.9, 1.9, 1.0, 1.0]).reshape(-1, 1, 1).expand_as(x)
    torch.testing.assert_close(out, expected)
    assert calls == [10]
    # entirely outside the interval: a single conditional pass, no doubled batch
    out = classifier_free_guidance(forward, x[3:], t[3:], y[3:], 10, 1.9, (0.0, 0.75))
    torch.testing.assert_close(out, torch.ones_like(x[3:]))
    assert calls == [10, 2]


def test_forward_with_cfg_matches_manual_combination():
    model = _randomize_zero_init(_tiny("LightningDiT-T/1")).eval()
    x, _, y = _inputs(batch=2)
    t = torch.tensor([0.3, 0.9])
    null = torch.full_like(y, model.null_label)
    out = model.forward_with_cfg(x, t, y, cfg_scale=3.0, cfg_interval=(0.0, 0.75))
    v_c, v_u = model(x, t, y), model(x, t, null)
    torch.testing.assert_close(out[0], (v_u + 3.0 * (v_c - v_u))[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], v_c[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", TINY_KEYS)
def test_gflops_matches_flop_counter(key):
    """The analytic count equals torch's FlopCounterMode (Linear layers) plus the two
    attention matmuls, which the CPU SDPA kernel hides from the counter."""
    model = _tiny(key).eval()
    L, D = TINY["num_tokens"], model.hidden_size
    with FlopCounterMode(display=False) as counter:
        model(*_inputs(batch=1))
    attention = model.depth * 2 * (2 * L * L * D)
    assert forward_gflops(model, L) * 1e9 == pytest.approx(counter.get_total_flops() + attention)


def test_gflops_against_spec_and_dit():
    with torch.device("meta"):
        xl = SiT_models["SiT-XL/1"](**PAPER)
        large = SiT_models["SiT-L/1"](**PAPER)
        dit_xl2 = SiT_models["SiT-XL/1"](in_channels=16, num_tokens=256)  # 2x2x4 patches
    # the official class, measured (one decimal): 116.7 and 79.3; ours are 116.74 and 79.246
    assert forward_gflops(xl, 128) == pytest.approx(116.7, abs=0.06)
    assert forward_gflops(large, 128) == pytest.approx(79.3, abs=0.06)
    # DiT-XL/2 at 256 px: the DiT paper's 118.6 "GFLOPs" are multiply-adds
    assert forward_gflops(dit_xl2, 256) / 2 == pytest.approx(118.6, abs=0.1)
