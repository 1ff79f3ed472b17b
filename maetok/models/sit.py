"""SiT and LightningDiT on MAETok's 1D latents (paper §4.1, App. B Tables 8-9).

A latent z: (B, L, H) (L = 128 tokens of H = 32 channels for MAETok-B) is used with
"patch size 1": each token is one transformer token, embedded by Linear(H -> D) plus a
fixed 1D sin-cos position embedding (the official `sit.py`). The rest is DiT:
timestep + class conditioning through adaLN-Zero blocks and an adaLN final layer back to
H channels. The output has H channels, not 2H: the official SiT for MAETok is built
without learn_sigma, which its parameter count confirms (675,000,608 for SiT-XL/1).

LightningDiT (Yao & Wang 2025) is the same network with four switches (paper Table 9):
1D RoPE on the token index inside attention, SwiGLU MLP, RMSNorm, and RMS qk-norm. As in
the LightningDiT code, the fixed absolute position embedding is kept alongside RoPE.

Time t is the continuous path time in [0, 1] with t = 1 noise and t = 0 data (see
maetok/transport/path.py); it is embedded as is, not scaled by 1000 (as the official code).
"""

import math

import torch
import torch.nn as nn
from timm.layers import Mlp, SwiGLU

from maetok.models.attention import sdpa


def modulate(x, shift, scale):
    """adaLN: x: (B, L, D); shift, scale: (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_pos_embed_1d(dim, num_tokens):
    """Interleaved 1D sin-cos table (num_tokens, dim): column 2i is sin(p w_i), column
    2i + 1 is cos(p w_i), w_i = 10000^(-2i / dim) (official `positionalencoding1d`)."""
    omega = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = torch.arange(num_tokens, dtype=torch.float64)[:, None] * omega[None]  # (L, D/2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(num_tokens, dim).float()


def rope_cos_sin(num_tokens, head_dim, base=10000.0, device=None):
    """1D RoPE tables (L, head_dim) for the rotate-half convention."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angle = torch.arange(num_tokens, device=device, dtype=torch.float32)[:, None] * inv_freq[None]
    angle = torch.cat([angle, angle], dim=-1)
    return angle.cos(), angle.sin()


def apply_rope(x, cos, sin):
    """x: (B, heads, L, head_dim) rotated by position: pairs (i, i + head_dim / 2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


def make_norm(dim, use_rmsnorm):
    """Block norm: affine-free LayerNorm (DiT) or RMSNorm with a gain (LightningDiT)."""
    if use_rmsnorm:
        return nn.RMSNorm(dim, eps=1e-6)
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


class TimestepEmbedder(nn.Module):
    """t: (B,) -> (B, D): sinusoidal features ([cos, sin], dim 256) then a 2-layer MLP."""

    def __init__(self, hidden_size, frequency_embedding_size=256, max_period=10000.0):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def timestep_embedding(self, t):
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 256)

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """y: (B,) -> (B, D). Row num_classes is the null class used for CFG.

    Label dropout for CFG training happens here, in train mode only (DiT's choice; the
    transport code never touches labels)."""

    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, y, train):
        if train and self.dropout_prob > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class Attention(nn.Module):
    """Multi-head self-attention via SDPA, with optional qk RMSNorm and 1D RoPE."""

    def __init__(self, dim, num_heads, qk_norm=False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope=None):
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, L, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        x = sdpa(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, L, D))


class SiTBlock(nn.Module):
    """adaLN-Zero transformer block (DiT): c modulates and gates both residual branches."""

    def __init__(self, hidden_size, num_heads, mlp_hidden, use_swiglu=False,
                 use_rmsnorm=False, use_qknorm=False):
        super().__init__()
        self.norm1 = make_norm(hidden_size, use_rmsnorm)
        self.attn = Attention(hidden_size, num_heads, qk_norm=use_qknorm)
        self.norm2 = make_norm(hidden_size, use_rmsnorm)
        if use_swiglu:
            self.mlp = SwiGLU(hidden_size, mlp_hidden)
        else:
            self.mlp = Mlp(hidden_size, mlp_hidden, act_layer=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x, c, rope=None):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.adaLN_modulation(c).chunk(6, dim=-1))
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x  # (B, L, D)


class FinalLayer(nn.Module):
    """Norm + adaLN (shift, scale) + Linear(D -> H)."""

    def __init__(self, hidden_size, out_channels, use_rmsnorm=False):
        super().__init__()
        self.norm_final = make_norm(hidden_size, use_rmsnorm)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.linear = nn.Linear(hidden_size, out_channels)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, L, H)


class LatentShapeError(ValueError):
    """Latents whose (L, H) differ from the shape a generator was built for."""


class SiT(nn.Module):
    """Velocity network v(x_t, t, y) on (B, L, H) latents; LightningDiT via the use_* flags.

    use_swiglu: SwiGLU MLP with hidden int(2/3 * mlp_ratio * D), as LightningDiT sizes it
    so the MLP keeps about the GELU MLP's parameter count.
    use_qknorm: RMSNorm over each head's q and k (with a gain), before RoPE.
    """

    def __init__(self, num_tokens=128, in_channels=32, hidden_size=1152, depth=28,
                 num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000,
                 use_rope=False, use_swiglu=False, use_rmsnorm=False, use_qknorm=False,
                 rope_base=10000.0):
        super().__init__()
        self.num_tokens = num_tokens
        self.in_channels = in_channels
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.use_rope = use_rope
        self.use_swiglu = use_swiglu
        self.rope_base = rope_base
        self.mlp_hidden = int(2 / 3 * mlp_ratio * hidden_size) if use_swiglu else int(mlp_ratio * hidden_size)

        self.x_embedder = nn.Linear(in_channels, hidden_size)
        # Fixed sin-cos table as a frozen parameter, as the official code stores it: it is
        # counted in the total parameter count (675.0M) but not among the trainable ones.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, hidden_size), requires_grad=False)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        self.blocks = nn.ModuleList([
            SiTBlock(hidden_size, num_heads, self.mlp_hidden, use_swiglu, use_rmsnorm, use_qknorm)
            for _ in range(depth)
        ])
        self.final_layer = FinalLayer(hidden_size, in_channels, use_rmsnorm)
        self.initialize_weights()

    @property
    def null_label(self):
        return self.num_classes

    def initialize_weights(self):
        """DiT init: xavier-uniform Linear, zero biases, N(0, 0.02) label table and
        timestep MLP, zero adaLN and output layers (the model starts as v = 0)."""
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.apply(_basic_init)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_1d(self.hidden_size, self.num_tokens)[None])
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x, t, y):
        """x: (B, L, H) noisy latent, t: (B,) path time, y: (B,) labels -> v: (B, L, H)."""
        if tuple(x.shape[1:]) != (self.num_tokens, self.in_channels):
            raise LatentShapeError(
                f"generator (width {self.hidden_size}, depth {self.depth}) was built for latents (L, H) = "
                f"({self.num_tokens}, {self.in_channels}), got {tuple(x.shape[1:])}: these latents come from a "
                "tokenizer with another tokenizer.model.num_latent_tokens / latent_dim; use the latent cache "
                "the generator was trained on, or retrain the generator on these latents")
        x = self.x_embedder(x) + self.pos_embed  # (B, L, D)
        c = self.t_embedder(t) + self.y_embedder(y, self.training)  # (B, D)
        rope = None
        if self.use_rope:
            rope = rope_cos_sin(x.shape[1], self.hidden_size // self.num_heads, self.rope_base, x.device)
        for block in self.blocks:
            x = block(x, c, rope)
        return self.final_layer(x, c)  # (B, L, H)

    def forward_with_cfg(self, x, t, y, cfg_scale, cfg_interval=(0.0, 1.0)):
        """Classifier-free guidance, applied where cfg_interval[0] <= t <= cfg_interval[1].

        t = 1 is noise (transport/path.py), so the paper's SiT-XL setting, scale 1.9 on
        [0, 0.75] (App. C.2), leaves the noisiest quarter of the trajectory unguided, as
        the official sampler's guidance_low <= t <= guidance_high test does.
        """
        return classifier_free_guidance(self.forward, x, t, y, self.null_label, cfg_scale, cfg_interval)


def classifier_free_guidance(forward, x, t, y, null_label, cfg_scale, cfg_interval=(0.0, 1.0)):
    """v = v_null + s (v_y - v_null) for samples whose t lies in the closed interval,
    v = v_y elsewhere. One doubled batch [x; x] with labels [y; null] when any sample
    needs guidance, one conditional pass otherwise. x: (B, ...), t: (B,), y: (B,)."""
    low, high = cfg_interval
    inside = (t >= low) & (t <= high)
    if cfg_scale == 1.0 or not bool(inside.any()):
        return forward(x, t, y)
    out = forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
    v_cond, v_null = out.chunk(2, dim=0)
    v_guided = v_null + cfg_scale * (v_cond - v_null)
    inside = inside.reshape(-1, *([1] * (x.dim() - 1)))
    return torch.where(inside, v_guided, v_cond)


def model_info(model):
    """{"total": all parameters incl. the frozen position table, "trainable": ...}."""
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def forward_gflops(model, num_tokens):
    """Analytic GFLOPs of one forward pass for one sample (no CFG doubling).

    Convention: a (m x k) @ (k x n) matmul costs 2 m n k FLOPs (one multiply-add = 2);
    all Linear layers, the embedders, the per-sample adaLN projections and the two
    attention matmuls (q k^T and attn v) are counted; norms, softmax, activations and
    elementwise ops are not. This is the convention of torch's FlopCounterMode; halve it
    for MACs (the DiT paper's "118.6 GFLOPs" for DiT-XL/2 is MACs).

    SiT-L/1 / SiT-XL/1 at 128 tokens: 79.25 / 116.74 GFLOPs (39.6 / 58.4 GMACs), as
    FlopCounterMode gives for the official class (79.3 / 116.7); DiT-XL/2 at 256 tokens gives
    237.2 = 2 x the DiT paper's 118.6. The paper (§4.5) quotes 48.5 GFLOPs for SiT-XL
    on 128 tokens and 373.3 on 1024 (ours: 116.7 and 1049); neither FLOPs nor MACs
    reproduce them and the paper gives no method, so we report ours.
    """
    D, H, L = model.hidden_size, model.in_channels, num_tokens
    freq_dim = model.t_embedder.frequency_embedding_size
    mlp = (3 if model.use_swiglu else 2) * D * model.mlp_hidden  # MACs per token
    per_block = (L * (3 * D * D + D * D + mlp)  # qkv, out proj, MLP
                 + 2 * L * L * D  # q k^T and attn v over all heads
                 + 6 * D * D)  # adaLN projection (once per sample)
    macs = (L * H * D  # x_embedder
            + freq_dim * D + D * D  # timestep MLP
            + model.depth * per_block
            + 2 * D * D + L * D * H)  # final adaLN and output Linear
    return 2 * macs / 1e9


# --- size registry (DiT-style; "/1" = patch size 1 on 1D latents) ----------------------
# Every entry takes keyword overrides of SiT's arguments (e.g. depth=2 for a rehearsal, keeping the width).
def SiT_XL_1(**kwargs):
    return SiT(**{"depth": 28, "hidden_size": 1152, "num_heads": 16, **kwargs})


def SiT_L_1(**kwargs):
    return SiT(**{"depth": 24, "hidden_size": 1024, "num_heads": 16, **kwargs})


def SiT_B_1(**kwargs):
    return SiT(**{"depth": 12, "hidden_size": 768, "num_heads": 12, **kwargs})


def SiT_S_1(**kwargs):
    return SiT(**{"depth": 12, "hidden_size": 384, "num_heads": 6, **kwargs})


def SiT_T_1(**kwargs):
    """Tiny stand-in for SiT-L/XL in CPU runs (16-32 tokens of dim 8-16, 2 cores)."""
    return SiT(**{"depth": 4, "hidden_size": 128, "num_heads": 4, **kwargs})


def SiT_Fixture_1(**kwargs):
    """The SiT of the golden fixtures made with the official code (tests/fixtures/official,
    docs/official_weights.md): width 288, depth 2, 4 heads of 72 channels (SiT-XL's head width)."""
    return SiT(**{"depth": 2, "hidden_size": 288, "num_heads": 4, **kwargs})


LIGHTNING = {"use_rope": True, "use_swiglu": True, "use_rmsnorm": True, "use_qknorm": True}


def LightningDiT_XL_1(**kwargs):
    return SiT(**{"depth": 28, "hidden_size": 1152, "num_heads": 16, **LIGHTNING, **kwargs})


def LightningDiT_L_1(**kwargs):
    return SiT(**{"depth": 24, "hidden_size": 1024, "num_heads": 16, **LIGHTNING, **kwargs})


def LightningDiT_B_1(**kwargs):
    return SiT(**{"depth": 12, "hidden_size": 768, "num_heads": 12, **LIGHTNING, **kwargs})


def LightningDiT_T_1(**kwargs):
    """Tiny LightningDiT for CPU runs and tests."""
    return SiT(**{"depth": 4, "hidden_size": 128, "num_heads": 4, **LIGHTNING, **kwargs})


SiT_models = {
    "SiT-T/1": SiT_T_1,
    "SiT-S/1": SiT_S_1,
    "SiT-B/1": SiT_B_1,
    "SiT-L/1": SiT_L_1,
    "SiT-XL/1": SiT_XL_1,
    "SiT-Fixture/1": SiT_Fixture_1,
    "LightningDiT-T/1": LightningDiT_T_1,
    "LightningDiT-B/1": LightningDiT_B_1,
    "LightningDiT-L/1": LightningDiT_L_1,
    "LightningDiT-XL/1": LightningDiT_XL_1,
}
