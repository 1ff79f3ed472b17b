"""MAETok: a 1D ViT autoencoder trained with mask modelling and auxiliary shallow decoders.

Paper §3 (Chen et al. 2025, arXiv 2502.03444) with the architecture details of the official code
(spec §2, "[U]" commit f4d60a0). Reading order, as in the paper:

    image -> random_masking -> Encoder([x; latent tokens]) -> Bottleneck -> z: (B, L, H)
    z -> PixelDecoder([mask tokens; z]) -> x_rec
    z -> aux decoders -> HOG / DINOv2 / CLIP / pixel features at the masked patches

Position information (paper §3.1): 2D RoPE on the image tokens, a learned 1D absolute embedding
on the latent tokens, which are never rotated. Three choices of image-token position encoding:
"rope_mixed" (learnable per-layer, per-head frequencies, Heo et al. 2024; the released
checkpoint, spec §2.4), "rope_axial" (fixed axial frequencies) and "ape" (learned absolute table).

Deviations from the official code, each chosen on purpose:
- attention always goes through `F.scaled_dot_product_attention`, RoPE included (the official
  code drops to an explicit softmax whenever RoPE is on, spec §2.2);
- parameters the official code builds but never uses are not built: the decoder's ViT
  patch_embed / pos_embed, the modulated final-norm of each decoder (its latent rows are
  discarded), the aux decoders' 1000-way class heads, patch_embed and pos_embed, and the 2.13M
  REPA projector that `MaskAEModel` builds and never calls (spec §2.7, §7). `official_only_params`
  counts them so totals can be compared with the paper's 176M;
- aux decoders carry no cls token (the official ones have one, spec §2.7);
- masking uses torch's RNG (seedable) instead of NumPy's unseeded one.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerScale, Mlp, PatchEmbed, resample_abs_pos_embed

from maetok.models.attention import sdpa
from maetok.models.hog import HOGGenerator

POS_EMBEDS = ("rope_mixed", "rope_axial", "ape")
DECODER_BLOCKS = ("modulated", "plain")
BOTTLENECKS = ("ae", "vae")
AUX_TARGETS = ("pixel", "hog", "dino", "clip")
AUX_DEPTHS = ("linear", 1, 3, 6, 12)
AUX_LOSSES = ("mse", "cosine")
MASK_RATIO_DISTS = ("truncnorm", "uniform")

# Default aux loss per target: the official code (spec §2.7, §10.1) uses MSE for HOG and negative
# cosine similarity for the DINOv2 and SigLIP features; paper Eq. 8 writes MSE for every target.
# We default to the official choice; pass aux_losses={"dino": "mse", ...} for the paper's.
AUX_LOSS_DEFAULTS = {"pixel": "mse", "hog": "mse", "dino": "cosine", "clip": "cosine"}
# Teacher feature widths (spec §2.7): DINOv2-L/16 at 256 px and SigLIP-SO400M/16 at 256 px.
TEACHER_DIMS = {"dino": 1024, "clip": 1152}


# --------------------------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------------------------
def _normal_cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def truncnorm_mean(low, high, std=0.25):
    """Mean of N(high, std^2) truncated to [low, high] (the official mask-ratio law, spec §2.6)."""
    if low == high:
        return low
    a = (low - high) / std
    pdf = lambda u: math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    return high + std * (pdf(a) - pdf(0.0)) / (0.5 - _normal_cdf(a))


def check_mask_ratio(low, high, dist="truncnorm"):
    """ValueError unless 0 <= low <= high <= 1 and dist is known."""
    if not 0.0 <= low <= 1.0 or not 0.0 <= high <= 1.0:
        raise ValueError(f"mask_ratio_low ({low}) and mask_ratio_high ({high}) must lie in [0, 1]")
    if low > high:
        raise ValueError(f"mask_ratio_low ({low}) must be <= mask_ratio_high ({high})")
    _check_choice("mask_ratio_dist", dist, MASK_RATIO_DISTS)


def sample_mask_ratio(low, high, dist="truncnorm", std=0.25, generator=None):
    """One mask ratio for a whole batch (the official code draws one per forward, spec §2.6).

    "truncnorm": the official `truncnorm(a=(low-high)/std, b=0, loc=high, scale=std)`, i.e. a
    normal centred on `high` truncated to [low, high]; density rises towards `high`, mean 0.505 for
    (0.4, 0.6). "uniform": U[low, high], a literal reading of the paper's "40-60%".
    """
    check_mask_ratio(low, high, dist)
    u = torch.rand((), dtype=torch.float64, device="cpu", generator=generator).item()
    if low == high:
        return low
    if dist == "uniform":
        return low + u * (high - low)
    # Inverse-CDF sampling between Phi(a) and Phi(0) = 0.5.
    cdf_a = _normal_cdf((low - high) / std)
    q = torch.tensor(cdf_a + u * (0.5 - cdf_a), dtype=torch.float64)
    return min(max(high + std * torch.special.ndtri(q).item(), low), high)


def random_masking(batch_size, num_tokens, mask_ratio, device=None, generator=None):
    """Boolean mask (B, N), True = masked; ceil(N * ratio) random tokens per sample (spec §2.6).

    A generator must live on `device`.
    """
    num_masked = math.ceil(round(num_tokens * mask_ratio, 6))
    noise = torch.rand(batch_size, num_tokens, device=device, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # a random permutation per sample
    return ranks < num_masked


# --------------------------------------------------------------------------------------------
# 2D RoPE and attention
# --------------------------------------------------------------------------------------------
def grid_coords(grid_size, device=None):
    """Integer (x, y) = (column, row) of each image token in raster order: (N, 2), fp32."""
    gh, gw = grid_size
    y, x = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1).float()


class Rope2D(nn.Module):
    """2D rotary frequencies for image tokens; angle = x * Fx + y * Fy per channel pair.

    mode "mixed": learnable (Fx, Fy) per layer, head and pair (Heo et al. 2024 RoPE-Mixed, spec §2.4),
        stored as `freqs`: (2, depth, heads, head_dim // 2), theta 10 in the official config.
    mode "axial": fixed, shared by all layers and heads; the first half of the pairs rotate with x,
        the second half with y, magnitudes theta^(-4k / head_dim) (theta 100 as in RoPE-ViT).

    Positions are integer grid coordinates computed from the grid at forward time, so a model
    trained at one resolution runs at another (paper Table 13b).
    """

    def __init__(self, depth, num_heads, head_dim, mode="mixed", theta=10.0):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
        self.depth, self.num_heads, self.head_dim, self.mode, self.theta = depth, num_heads, head_dim, mode, theta
        if mode == "mixed":
            self.freqs = nn.Parameter(torch.empty(2, depth, num_heads, head_dim // 2))
        elif mode == "axial":
            self.register_buffer("freqs", torch.empty(2, 1, 1, head_dim // 2), persistent=False)
        else:
            raise ValueError(f"unknown RoPE mode {mode!r}")
        self.reset_parameters()

    def magnitudes(self):
        k = torch.arange(self.head_dim // 4, dtype=torch.float32, device=self.freqs.device)
        return self.theta ** (-4.0 * k / self.head_dim)  # (head_dim // 4,)

    @torch.no_grad()
    def reset_parameters(self):
        m = self.magnitudes()
        if self.mode == "axial":
            zeros = torch.zeros_like(m)
            self.freqs.copy_(torch.stack([torch.cat([m, zeros]), torch.cat([zeros, m])])[:, None, None])
            return
        # One random direction phi per (layer, head); the two halves of the pairs point along phi
        # and phi + pi/2 with the same magnitudes (spec §2.4).
        phi = torch.rand(self.depth, self.num_heads, 1, device=m.device) * 2 * math.pi
        fx = torch.cat([m * torch.cos(phi), m * torch.cos(phi + math.pi / 2)], dim=-1)
        fy = torch.cat([m * torch.sin(phi), m * torch.sin(phi + math.pi / 2)], dim=-1)
        self.freqs.copy_(torch.stack([fx, fy]))

    def forward(self, grid_size, num_prefix=0, num_suffix=0):
        """cos, sin: (depth or 1, heads or 1, T, head_dim // 2), T = prefix + N + suffix tokens.

        Prefix (cls) and suffix (latent) tokens get angle 0, i.e. the identity rotation.
        """
        with torch.autocast(device_type=self.freqs.device.type, enabled=False):
            pos = grid_coords(grid_size, self.freqs.device)  # (N, 2)
            freqs = self.freqs.float()
            angles = pos[:, 0, None] * freqs[0, :, :, None] + pos[:, 1, None] * freqs[1, :, :, None]
            angles = F.pad(angles, (0, 0, num_prefix, num_suffix))  # (depth, heads, T, head_dim // 2)
            return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    """Rotate channel pairs (2j, 2j + 1) of x: (B, heads, T, head_dim) by the given angles, in fp32."""
    x_ = x.float().unflatten(-1, (-1, 2))
    x0, x1 = x_[..., 0], x_[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


def explicit_attention(q, k, v):
    """Reference softmax(q k^T / sqrt(d)) v, the official code's RoPE path; tests and benchmarks only."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return attn.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention with optional 2D RoPE on q and k; SDPA by default."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_sdpa = True  # False switches to `explicit_attention` (equality test, benchmark)

    def forward(self, x, rope=None):
        """x: (B, T, D); rope: (cos, sin) broadcastable to (B, heads, T, head_dim // 2) or None."""
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, h, T, d)
        q, k, v = qkv
        if rope is not None:  # q and k rotated together: half the (overhead-bound, at tiny scale) kernels
            q, k = apply_rope(qkv[:2], *rope)
        x = sdpa(q, k, v) if self.use_sdpa else explicit_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, T, D))


# --------------------------------------------------------------------------------------------
# Transformer blocks
# --------------------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-LN ViT block with LayerScale (the encoder's DINOv2-style block, spec §2.2)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, init_values=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x, z=None, rope=None):
        """x: (B, T, D); z is accepted and ignored so blocks are interchangeable."""
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


def modulate_latents(h, shift, scale):
    """h: (..., T, D); shift, scale: (..., L, D) applied to the last L rows as h * scale + shift (no 1 +)."""
    L = shift.shape[-2]
    return torch.cat([h[..., :-L, :], h[..., -L:, :] * scale + shift], dim=-2)


class ModulatedBlock(nn.Module):
    """Latent-modulated decoder block (the official MoVQBlockv2, spec §2.5).

    Non-affine LayerNorms; the normalised latent rows are modulated per token by the raw latent z
    through a zero-initialised Linear(H -> 4D); no LayerScale.
    """

    def __init__(self, dim, num_heads, latent_dim, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(latent_dim, 4 * dim))

    def forward(self, x, z, rope=None):
        """x: (B, N + L, D), z: (B, L, H) -> (B, N + L, D)."""
        shift1, scale1, shift2, scale2 = self.adaLN_modulation(z).chunk(4, dim=-1)  # 4 x (B, L, D)
        x = x + self.attn(modulate_latents(self.norm1(x), shift1, scale1), rope)
        return x + self.mlp(modulate_latents(self.norm2(x), shift2, scale2))


def compile_each(blocks):
    """torch.compile each block in place (state_dict keys unchanged). Blocks of one type and shape
    share one compiled graph: Dynamo lifts a module's parameters to graph inputs, so the graph
    compiled for the first layer serves every other layer."""
    for block in blocks:
        block.compile()


def _layer_rope(rope, i):
    if rope is None:
        return None
    cos, sin = rope
    return cos[i % cos.shape[0]], sin[i % sin.shape[0]]


def _grid_pos_embed(table, grid_size, base_grid, num_prefix=0):
    """Learned absolute table (1, prefix + Nb, D) for base_grid, bicubic-resampled to grid_size."""
    if tuple(grid_size) == tuple(base_grid):
        return table
    return resample_abs_pos_embed(table, list(grid_size), list(base_grid), num_prefix_tokens=num_prefix)


# --------------------------------------------------------------------------------------------
# Encoder, bottleneck, decoders
# --------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """ViT over [image tokens; L latent tokens] -> the L latent outputs, LayerNorm'd: (B, L, D).

    With `latent_tokens=False` (paper Table 6 / 13a "image tokens only") the N image-token outputs
    are returned instead. `abs_pos=True` reproduces the official encoder, which also prepends a cls
    token and adds a learned absolute embedding to [cls; image tokens] even with RoPE on (spec
    §2.3 step 3, kept as the spec §12 checklist recommends for checkpoint compatibility).
    """

    def __init__(self, img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio,
                 num_latent_tokens, latent_tokens, pos_embed, abs_pos, rope_theta):
        super().__init__()
        self.base_grid = (img_size // patch_size, img_size // patch_size)
        num_patches = self.base_grid[0] * self.base_grid[1]
        self.has_latents = latent_tokens
        self.num_prefix = 1 if abs_pos else 0
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if abs_pos else None
        use_table = abs_pos or pos_embed == "ape"
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + num_patches, embed_dim)) if use_table else None
        if latent_tokens:
            self.latent_tokens = nn.Parameter(torch.zeros(1, num_latent_tokens, embed_dim))
            self.latent_pos_embed = nn.Parameter(torch.zeros(1, num_latent_tokens, embed_dim))
        self.rope = None if pos_embed == "ape" else Rope2D(depth, num_heads, embed_dim // num_heads,
                                                           pos_embed.removeprefix("rope_"), rope_theta)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)  # the paper's bottleneck LayerNorm (spec §2.3)

    def forward(self, x, mask=None):
        """x: (B, C, H, W), mask: (B, N) bool or None -> (B, L, D) (or (B, N, D) without latents)."""
        grid = (x.shape[-2] // self.patch_embed.patch_size[0], x.shape[-1] // self.patch_embed.patch_size[1])
        x = self.patch_embed(x)  # (B, N, D)
        if mask is not None:  # masked slots keep their position: the mask token goes in before any PE
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + _grid_pos_embed(self.pos_embed, grid, self.base_grid, self.num_prefix)
        num_latent = 0
        if self.has_latents:
            latents = (self.latent_tokens + self.latent_pos_embed).expand(x.shape[0], -1, -1)
            x = torch.cat([x, latents], dim=1)  # (B, prefix + N + L, D)
            num_latent = latents.shape[1]
        rope = self.rope(grid, self.num_prefix, num_latent) if self.rope is not None else None
        for i, block in enumerate(self.blocks):
            x = block(x, rope=_layer_rope(rope, i))
        x = self.norm(x)
        return x[:, -num_latent:] if self.has_latents else x[:, self.num_prefix:]


class Bottleneck(nn.Module):
    """Linear D -> H (AE), or D -> 2H with a Gaussian posterior and the reparameterisation trick (VAE).

    The VAE samples in train mode and returns the mean in eval mode. Its KL to N(0, I) is summed over
    the (L, H) latent entries and averaged over the batch.
    """

    def __init__(self, embed_dim, latent_dim, kind="ae"):
        super().__init__()
        self.kind = kind
        self.proj = nn.Linear(embed_dim, latent_dim * (2 if kind == "vae" else 1))  # official quant_conv

    def forward(self, h):
        """h: (B, L, D) -> z: (B, L, H), kl: scalar tensor or None."""
        if self.kind == "ae":
            return self.proj(h), None
        mean, logvar = self.proj(h).chunk(2, dim=-1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if self.training else mean
        mean, logvar = mean.float(), logvar.float()  # the KL sum in fp32 also under bf16 autocast
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2)).mean()
        return z, kl


class Decoder(nn.Module):
    """ViT over [N image (mask) tokens; L projected latents] -> per-patch outputs (B, N, out_dim).

    Used for the pixel decoder (out_dim = p * p * C) and, narrower and shallower, for the auxiliary
    decoders (paper §3.2: "same design as the main pixel decoder but with fewer layers"). The N image
    tokens are copies of one learned mask token positioned by RoPE (or a learned table for "ape");
    the latents get Linear(H -> D) and a learned 1D embedding (spec §2.5).
    """

    def __init__(self, img_size, patch_size, latent_dim, num_latent_tokens, embed_dim, depth, num_heads,
                 mlp_ratio, out_dim, pos_embed, block, rope_theta, latent_tokens=True):
        super().__init__()
        self.base_grid = (img_size // patch_size, img_size // patch_size)
        self.latent_is_grid = not latent_tokens  # the latents are the image tokens themselves
        self.decoder_embed = nn.Linear(latent_dim, embed_dim)  # official post_quant_conv
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.latent_pos_embed = nn.Parameter(torch.zeros(1, num_latent_tokens, embed_dim))
        num_patches = self.base_grid[0] * self.base_grid[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim)) if pos_embed == "ape" else None
        self.rope = None if pos_embed == "ape" else Rope2D(depth, num_heads, embed_dim // num_heads,
                                                           pos_embed.removeprefix("rope_"), rope_theta)
        if block == "modulated":
            self.blocks = nn.ModuleList([ModulatedBlock(embed_dim, num_heads, latent_dim, mlp_ratio)
                                         for _ in range(depth)])
        else:
            self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, elementwise_affine=block == "plain", eps=1e-6)
        self.head = nn.Linear(embed_dim, out_dim)

    def forward(self, z, grid_size):
        """z: (B, L, H), grid_size: (gh, gw) -> (B, gh * gw, out_dim)."""
        return self.head(self.trunk(z, grid_size))

    def latent_pos_embed_at(self, grid_size):
        if self.latent_is_grid:
            return _grid_pos_embed(self.latent_pos_embed, grid_size, self.base_grid)
        return self.latent_pos_embed

    def trunk(self, z, grid_size):
        """Everything but the head: (B, L, H) -> normalised image-token features (B, N, D)."""
        B, L, _ = z.shape
        N = grid_size[0] * grid_size[1]
        x = self.mask_token.expand(B, N, -1)
        if self.pos_embed is not None:
            x = x + _grid_pos_embed(self.pos_embed, grid_size, self.base_grid)
        x = torch.cat([x, self.decoder_embed(z) + self.latent_pos_embed_at(grid_size)], dim=1)  # (B, N + L, D)
        rope = self.rope(grid_size, 0, L) if self.rope is not None else None
        for i, block in enumerate(self.blocks):
            x = block(x, z, rope=_layer_rope(rope, i))
        return self.norm(x[:, :N])


# The aux decoders of one model share their architecture and differ only in the head's width.
# `AuxDecoders` runs their trunks as one pass over stacked weights, G decoders at a time: each
# Linear becomes one batched matmul instead of G small ones, and each elementwise op one kernel
# instead of G. At tiny scale a CPU step is bound by that per-op overhead (maetok, 3 aux decoders).
# The weights stay in the per-target modules, so the state_dict layout is the same either way.
def _stacked(tensors):
    return torch.stack(list(tensors))


def _grouped_linear(x, linears):
    """x: (G, B, T, in) through G nn.Linear of one shape at once -> (G, B, T, out)."""
    G, B, T, _ = x.shape
    w = _stacked(m.weight for m in linears).transpose(1, 2)  # (G, in, out)
    x = x.reshape(G, B * T, -1)
    y = torch.bmm(x, w) if linears[0].bias is None else torch.baddbmm(_stacked(m.bias for m in linears)[:, None], x, w)
    return y.view(G, B, T, -1)


def _grouped_layer_norm(x, norms):
    """G nn.LayerNorm of one shape (affine or not) over x: (G, ..., D)."""
    x = F.layer_norm(x, norms[0].normalized_shape, eps=norms[0].eps)
    if norms[0].weight is None:
        return x
    shape = (len(norms),) + (1,) * (x.dim() - 2) + (-1,)
    return x * _stacked(m.weight for m in norms).view(shape) + _stacked(m.bias for m in norms).view(shape)


def _grouped_scale(x, layer_scales):
    """G LayerScale (or Identity) over x: (G, B, T, D)."""
    if isinstance(layer_scales[0], nn.Identity):
        return x
    return x * _stacked(m.gamma for m in layer_scales)[:, None, None]


def _grouped_attention(x, attns, rope):
    """G `Attention` over x: (G, B, T, D); rope: (cos, sin) broadcastable to (G, B, heads, T, d // 2)."""
    G, B, T, D = x.shape
    qkv = _grouped_linear(x, [a.qkv for a in attns]).reshape(G, B, T, 3, attns[0].num_heads, -1)
    qkv = qkv.permute(3, 0, 1, 4, 2, 5)  # (3, G, B, heads, T, d)
    q, k, v = qkv
    if rope is not None:
        q, k = apply_rope(qkv[:2], *rope)
    attend = sdpa if attns[0].use_sdpa else explicit_attention
    o = attend(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1))  # (G * B, heads, T, d)
    o = o.unflatten(0, (G, B)).transpose(2, 3).reshape(G, B, T, D)
    return _grouped_linear(o, [a.proj for a in attns])


def _grouped_mlp(x, mlps):
    """G timm `Mlp` (fc1 -> act -> fc2; no norm, no dropout at these settings) over x: (G, B, T, D)."""
    return _grouped_linear(mlps[0].act(_grouped_linear(x, [m.fc1 for m in mlps])), [m.fc2 for m in mlps])


def _grouped_block(x, zg, blocks, rope):
    """Layer i of G decoders: x: (G, B, N + L, D), zg: (G, B, L, H), blocks: their G `Block`s or
    `ModulatedBlock`s; the same computation as each block's forward."""
    if isinstance(blocks[0], ModulatedBlock):
        mod = _grouped_linear(F.silu(zg), [b.adaLN_modulation[1] for b in blocks])
        shift1, scale1, shift2, scale2 = mod.chunk(4, dim=-1)  # 4 x (G, B, L, D)
        h = modulate_latents(_grouped_layer_norm(x, [b.norm1 for b in blocks]), shift1, scale1)
        x = x + _grouped_attention(h, [b.attn for b in blocks], rope)
        h = modulate_latents(_grouped_layer_norm(x, [b.norm2 for b in blocks]), shift2, scale2)
        return x + _grouped_mlp(h, [b.mlp for b in blocks])
    h = _grouped_attention(_grouped_layer_norm(x, [b.norm1 for b in blocks]), [b.attn for b in blocks], rope)
    x = x + _grouped_scale(h, [b.ls1 for b in blocks])
    h = _grouped_mlp(_grouped_layer_norm(x, [b.norm2 for b in blocks]), [b.mlp for b in blocks])
    return x + _grouped_scale(h, [b.ls2 for b in blocks])


def grouped_trunk(decoders, z, grid_size, block_fn=_grouped_block):
    """`Decoder.trunk` of G decoders of one architecture, at once: z: (B, L, H) -> (G, B, N, D).
    `block_fn` runs one layer (`_grouped_block`, or a compiled copy of it)."""
    G, (B, L, _), N = len(decoders), z.shape, grid_size[0] * grid_size[1]
    x = _stacked(d.mask_token for d in decoders).expand(G, B, N, -1)  # (G, B, N, D)
    if decoders[0].pos_embed is not None:
        x = x + _stacked(_grid_pos_embed(d.pos_embed, grid_size, d.base_grid) for d in decoders)
    zg = z.expand(G, B, L, -1)
    latents = _grouped_linear(zg, [d.decoder_embed for d in decoders])
    latents = latents + _stacked(d.latent_pos_embed_at(grid_size) for d in decoders)
    x = torch.cat([x, latents], dim=2)  # (G, B, N + L, D)
    ropes = [d.rope(grid_size, 0, L) for d in decoders] if decoders[0].rope is not None else None
    for i, blocks in enumerate(zip(*(d.blocks for d in decoders), strict=True)):
        rope = None
        if ropes is not None:  # (G, 1, heads or 1, T, d // 2): one rotation per decoder, shared by the batch
            layer = [_layer_rope(r, i) for r in ropes]
            rope = (_stacked(c for c, _ in layer)[:, None], _stacked(s for _, s in layer)[:, None])
        x = block_fn(x, zg, blocks, rope)
    return _grouped_layer_norm(x[:, :, :N], [d.norm for d in decoders])


class AuxDecoders(nn.ModuleDict):
    """The aux decoders {target: decoder}; called with (z, grid_size) -> {target: (B, N, C)}.

    Transformer aux decoders run as one group (`grouped_trunk`, then each head); linear ones, a
    single decoder, or `grouped = False` run one by one. Both paths compute the same function.
    """

    def __init__(self, decoders=None):
        super().__init__(decoders)
        self.grouped = True
        self.block_fn = _grouped_block

    def compile_blocks(self):
        """Regional torch.compile (see `MAETok.compile_blocks`): the grouped layer and each decoder's blocks."""
        self.block_fn = torch.compile(_grouped_block)
        for decoder in self.values():
            if isinstance(decoder, Decoder):
                compile_each(decoder.blocks)

    def forward(self, z, grid_size):
        decoders = list(self.values())
        if not (self.grouped and len(decoders) > 1 and all(isinstance(d, Decoder) for d in decoders)):
            return {name: decoder(z, grid_size) for name, decoder in self.items()}
        hidden = grouped_trunk(decoders, z, grid_size, self.block_fn)
        return {name: decoder.head(h) for (name, decoder), h in zip(self.items(), hidden, strict=True)}


class LinearAuxDecoder(nn.Module):
    """The "linear" aux decoder of Table 1d: a map linear in z from L latents to N patch features.

    A per-token Linear cannot map L latent tokens onto N patches when L != N, so the map is
    factorised: Linear over the token axis (L -> N), then Linear over channels (H -> out_dim).
    Fixed to the training grid.
    """

    def __init__(self, num_latent_tokens, num_patches, latent_dim, out_dim):
        super().__init__()
        self.token_proj = nn.Linear(num_latent_tokens, num_patches)
        self.head = nn.Linear(latent_dim, out_dim)

    def forward(self, z, grid_size):
        """z: (B, L, H) -> (B, N, out_dim)."""
        N = grid_size[0] * grid_size[1]
        if N != self.token_proj.out_features:
            raise ValueError(f"linear aux decoder is fixed to {self.token_proj.out_features} patches, got {N}")
        return self.head(self.token_proj(z.transpose(1, 2)).transpose(1, 2))


# --------------------------------------------------------------------------------------------
# Aux targets and losses
# --------------------------------------------------------------------------------------------
def resample_teacher_features(feats, grid_size, num_prefix_tokens=0):
    """Bring teacher features onto the tokenizer's patch grid by bilinear interpolation.

    feats: (B, C, h, w) feature map, or (B, T, C) tokens whose last T - num_prefix_tokens form a
    square raster grid. Returns (B, gh * gw, C).
    """
    if feats.dim() == 3:
        tokens = feats[:, num_prefix_tokens:]
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"teacher tokens ({tokens.shape[1]}) do not form a square grid")
        feats = tokens.transpose(1, 2).unflatten(2, (side, side))
    if tuple(feats.shape[-2:]) != tuple(grid_size):
        feats = F.interpolate(feats.float(), size=tuple(grid_size), mode="bilinear", align_corners=False)
    return feats.flatten(2).transpose(1, 2)


def masked_loss(pred, target, mask, kind):
    """Aux loss over the masked tokens (all tokens when nothing is masked).

    pred, target: (B, N, C); mask: (B, N) bool or None.
    "mse": sum of squared errors / (|M| * C) (official HOG loss); "cosine": -mean_M cos(pred, target).
    Computed in fp32 (pred may be bf16 under autocast).
    """
    pred, target = pred.float(), target.float()
    if kind == "mse":
        per_token = (pred - target).pow(2).mean(dim=-1)
    else:
        per_token = -F.cosine_similarity(pred, target, dim=-1)
    if mask is None or not mask.any():
        return per_token.mean()
    weight = mask.to(per_token.dtype)
    return (per_token * weight).sum() / weight.sum()


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------
class MAETok(nn.Module):
    """Masked-autoencoder tokenizer with a 1D latent z: (B, L, H) (paper §3).

    Args (main ones; the registry at the bottom gives the sizes):
        img_size, patch_size, in_chans: training image geometry; other sizes divisible by the patch
            size work at run time with RoPE (and with "ape" via an interpolated table).
        embed_dim, depth, num_heads: encoder and pixel decoder width / depth / heads (same for both,
            paper Table 7); decoder_depth, decoder_embed_dim, decoder_num_heads override the decoder's
            (the official code builds its encoder and decoder from separate ViT names, so they may differ).
        num_latent_tokens (L), latent_dim (H): the latent shape; latent_tokens=False or
            num_latent_tokens=0 uses the N image tokens as latents (Table 6, 13a).
        bottleneck: "ae" (paper) or "vae" (Table 1a baseline, returns a KL term).
        pos_embed: "rope_mixed" | "rope_axial" | "ape" for image tokens; enc_abs_pos adds the official
            encoder's cls token and learned absolute table on top (see `Encoder`).
        decoder_block: "modulated" (official MoVQ-style) | "plain" ViT blocks.
        mask_ratio_low/high, mask_ratio_dist: stage-1 mask-ratio law (spec §2.6); high = 0 disables.
        aux_targets: subset of AUX_TARGETS, one aux decoder each; aux_depth in AUX_DEPTHS;
            aux_embed_dim / aux_num_heads: aux decoder width (192 / 3 officially);
            aux_dims: per-target feature width overrides; aux_losses: per-target "mse" | "cosine"
            overrides of AUX_LOSS_DEFAULTS; hog_cell_size: HOG cell side in pixels.
    """

    def __init__(self, img_size=256, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, decoder_depth=None, decoder_embed_dim=None, decoder_num_heads=None,
                 num_latent_tokens=128, latent_dim=32, latent_tokens=True,
                 bottleneck="ae", pos_embed="rope_mixed", rope_theta=10.0, axial_rope_theta=100.0,
                 enc_abs_pos=True, decoder_block="modulated", mask_ratio_low=0.4, mask_ratio_high=0.6,
                 mask_ratio_dist="truncnorm", aux_targets=(), aux_depth=3, aux_embed_dim=192, aux_num_heads=3,
                 aux_dims=None, aux_losses=None, hog_cell_size=8):
        super().__init__()
        _check_choice("pos_embed", pos_embed, POS_EMBEDS)
        _check_choice("decoder_block", decoder_block, DECODER_BLOCKS)
        _check_choice("bottleneck", bottleneck, BOTTLENECKS)
        _check_choice("aux_depth", aux_depth, AUX_DEPTHS)
        for name in aux_targets:
            _check_choice("aux target", name, AUX_TARGETS)
        for name, kind in (aux_losses or {}).items():
            _check_choice("aux loss target", name, AUX_TARGETS)
            _check_choice(f"aux loss for {name!r}", kind, AUX_LOSSES)
        _check_image_size(img_size, patch_size)
        check_mask_ratio(mask_ratio_low, mask_ratio_high, mask_ratio_dist)

        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.mask_ratio_low, self.mask_ratio_high = mask_ratio_low, mask_ratio_high
        self.mask_ratio_dist = mask_ratio_dist
        grid = img_size // patch_size
        latent_tokens = latent_tokens and num_latent_tokens > 0
        self.num_latent_tokens = num_latent_tokens if latent_tokens else grid * grid
        self.latent_dim = latent_dim
        theta = rope_theta if pos_embed == "rope_mixed" else axial_rope_theta

        self.encoder = Encoder(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio,
                               self.num_latent_tokens, latent_tokens, pos_embed, enc_abs_pos, theta)
        self.bottleneck = Bottleneck(embed_dim, latent_dim, bottleneck)
        self.decoder = Decoder(img_size, patch_size, latent_dim, self.num_latent_tokens,
                               decoder_embed_dim or embed_dim, decoder_depth or depth, decoder_num_heads or num_heads,
                               mlp_ratio, patch_size**2 * in_chans, pos_embed, decoder_block, theta, latent_tokens)

        self.hog = HOGGenerator(patch_size, hog_cell_size, in_chans=in_chans) if "hog" in aux_targets else None
        dims = {"pixel": patch_size**2 * in_chans, "hog": self.hog.dim if self.hog else None, **TEACHER_DIMS}
        dims.update(aux_dims or {})
        self.aux_losses = {name: (aux_losses or {}).get(name, AUX_LOSS_DEFAULTS[name]) for name in aux_targets}
        self.aux_decoders = AuxDecoders()
        for name in aux_targets:
            if aux_depth == "linear":
                self.aux_decoders[name] = LinearAuxDecoder(self.num_latent_tokens, grid * grid, latent_dim, dims[name])
            else:
                self.aux_decoders[name] = Decoder(img_size, patch_size, latent_dim, self.num_latent_tokens,
                                                  aux_embed_dim, aux_depth, aux_num_heads, mlp_ratio, dims[name],
                                                  pos_embed, decoder_block, theta, latent_tokens)
        self.initialize_weights()

    def initialize_weights(self):
        """timm ViT init (spec §2.2): Linear trunc-normal(0.02), zero bias; tokens and tables as official."""
        def _init(m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, LayerScale | Rope2D):
                m.reset_parameters()

        self.apply(_init)
        # Patch embedding as a Linear over the flattened patch (MAE; timm leaves the conv default).
        w = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.encoder.patch_embed.proj.bias)
        for module in (self.encoder, self.decoder, *self.aux_decoders.values()):
            for name in ("mask_token", "latent_tokens"):
                if isinstance(getattr(module, name, None), nn.Parameter):
                    nn.init.normal_(getattr(module, name), std=0.02)
            for name in ("pos_embed", "latent_pos_embed"):
                if getattr(module, name, None) is not None:
                    nn.init.trunc_normal_(getattr(module, name), std=0.02)
        if self.encoder.cls_token is not None:
            nn.init.normal_(self.encoder.cls_token, std=1e-6)
        # Zero-init the latent modulation so latent rows enter each sublayer as 0 at init (spec §2.5).
        for m in self.modules():
            if isinstance(m, ModulatedBlock):
                nn.init.zeros_(m.adaLN_modulation[-1].weight)
                nn.init.zeros_(m.adaLN_modulation[-1].bias)

    def compile_blocks(self, parts=("encoder", "decoder", "aux_decoders")):
        """Regional torch.compile of `parts`: every transformer block (and the aux decoders' grouped
        layer), not the whole network. One graph per block type and shape serves every layer, and
        the on-disk Inductor cache serves every tokenizer with the same widths (the aux targets,
        depths, masking and bottleneck of the ablations live outside the blocks). For the tiny
        `maetok` on this CPU the first compile takes 69-77 s instead of 146-164 s for whole-module
        graphs, at the same step time (bench/bench_compile.py). Patch embedding, bottleneck and
        heads stay eager."""
        for name in parts:
            part = getattr(self, name)
            if isinstance(part, AuxDecoders):
                part.compile_blocks()
            else:
                compile_each(part.blocks)

    # --- geometry ---------------------------------------------------------------------------
    def grid_size(self, img_size):
        """(H, W) or int -> token grid (H / p, W / p); ValueError when not divisible."""
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        _check_image_size((h, w), self.patch_size)
        return h // self.patch_size, w // self.patch_size

    def patchify(self, x):
        """(B, C, H, W) -> (B, N, p * p * C), channels last within a patch (MAE order)."""
        B, C, H, W = x.shape
        p = self.patch_size
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // p) * (W // p), p * p * C)

    def unpatchify(self, x, grid_size):
        """(B, N, p * p * C) -> (B, C, gh * p, gw * p)."""
        B = x.shape[0]
        (gh, gw), p = grid_size, self.patch_size
        x = x.reshape(B, gh, gw, p, p, self.in_chans).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, self.in_chans, gh * p, gw * p)

    # --- paper pieces -----------------------------------------------------------------------
    def sample_mask(self, x, mask_ratio=None, generator=None):
        """(B, N) bool mask for x, or None. mask_ratio None: the stage-1 law in train mode, no mask
        in eval mode; a float: that fixed ratio (e.g. the stage-2 60% -> 0 anneal, paper §4.1)."""
        if mask_ratio is None:
            if not self.training or self.mask_ratio_high == 0:
                return None
            mask_ratio = sample_mask_ratio(self.mask_ratio_low, self.mask_ratio_high, self.mask_ratio_dist,
                                           generator=generator)
        if mask_ratio <= 0:
            return None
        gh, gw = self.grid_size(tuple(x.shape[-2:]))
        return random_masking(x.shape[0], gh * gw, mask_ratio, x.device, generator)

    def encode(self, x, mask=None, return_kl=False):
        """x: (B, C, H, W) in [-1, 1], mask: (B, N) bool -> z: (B, L, H) [, kl]."""
        self.grid_size(tuple(x.shape[-2:]))
        z, kl = self.bottleneck(self.encoder(x, mask))
        return (z, kl) if return_kl else z

    def decode(self, z, img_size=None):
        """z: (B, L, H) -> x_rec: (B, C, img_size, img_size); img_size defaults to the training size."""
        grid = self.grid_size(img_size or self.img_size)
        return self.unpatchify(self.decoder(z, grid), grid)

    def aux_targets(self, x, targets=None):
        """Per-patch target features {name: (B, N, C)} computed without gradient.

        "pixel" and "hog" come from x; "dino" / "clip" from `targets[name]`: a (B, N, C) tensor, a
        (B, C, h, w) or (B, T, C) teacher output resampled onto the grid, or a callable teacher(x).
        """
        grid = self.grid_size(tuple(x.shape[-2:]))
        out = {}
        with torch.no_grad():
            for name in self.aux_decoders:
                if name == "pixel":
                    out[name] = self.patchify(x)
                elif name == "hog":
                    out[name] = self.hog(x)
                else:
                    if targets is None or name not in targets:
                        raise KeyError(f"aux target {name!r} needs teacher features: pass targets={{{name!r}: ...}}")
                    feats = targets[name](x) if callable(targets[name]) else targets[name]
                    if not (feats.dim() == 3 and feats.shape[1] == grid[0] * grid[1]):
                        feats = resample_teacher_features(feats, grid)
                    out[name] = feats
        return out

    def forward(self, x, mask_ratio=None, targets=None, mask=None):
        """x: (B, C, H, W) -> dict of named outputs.

        x_rec (B, C, H, W); z (B, L, H); mask (B, N) bool or None; kl (scalar, VAE only, else None);
        aux_pred {name: (B, N, C)}; aux_loss {name: scalar}, over masked tokens. `mask` overrides
        the sampled mask; `targets` feeds the teacher features (see `aux_targets`).
        """
        grid = self.grid_size(tuple(x.shape[-2:]))
        if mask is None:
            mask = self.sample_mask(x, mask_ratio)
        z, kl = self.encode(x, mask, return_kl=True)
        x_rec = self.unpatchify(self.decoder(z, grid), grid)
        out = {"x_rec": x_rec, "z": z, "mask": mask, "kl": kl, "aux_pred": {}, "aux_loss": {}}
        if len(self.aux_decoders):
            y = self.aux_targets(x, targets)
            out["aux_pred"] = self.aux_decoders(z, grid)  # z is not detached: aux gradients reach the encoder
            for name, pred in out["aux_pred"].items():
                out["aux_loss"][name] = masked_loss(pred, y[name], mask, self.aux_losses[name])
        return out


def _check_choice(what, value, valid):
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {list(valid)}")


class ImageSizeError(ValueError):
    """Images whose side is not a multiple of the tokenizer's patch size."""


def _check_image_size(img_size, patch_size):
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    if h % patch_size or w % patch_size:
        raise ImageSizeError(f"image size {h}x{w} is not divisible by patch size {patch_size}: set params.yaml "
                             f"`data.image_size` to a multiple of {patch_size}, or pick a `tokenizer.model.size` "
                             "(MAETok_models) whose patch size divides it")


# --------------------------------------------------------------------------------------------
# Parameter accounting
# --------------------------------------------------------------------------------------------
COMPONENTS = ("encoder", "bottleneck", "decoder", "aux_decoders")


def model_info(model):
    """Total and trainable parameter counts per component, plus the tokenizer (enc + bottleneck + dec)."""
    info = {}
    for name in COMPONENTS:
        params = list(getattr(model, name).parameters())
        info[name] = {"total": sum(p.numel() for p in params),
                      "trainable": sum(p.numel() for p in params if p.requires_grad)}
    for key, parts in (("tokenizer", COMPONENTS[:3]), ("all", COMPONENTS)):
        info[key] = {k: sum(info[p][k] for p in parts) for k in ("total", "trainable")}
    return info


def official_only_params(model, repa_dim=1024):
    """Parameters the official code builds for this configuration that `MAETok` does not (spec §7).

    decoder: the unused ViT patch_embed + pos_embed (N + 1 slots), and the latent modulation of the
    final norm, whose rows are discarded. aux_decoders, each: unused 1000-way class head,
    patch_embed and pos_embed, final-norm modulation, and the cls token we omit. repa_projector: the
    never-called MLP 32 -> 1024 -> 1024 -> 1024 (spec §2.7). Adding these to `model_info` gives the
    official counts: 173,891,360 for the tokenizer, +2,132,992 = 176.0M (the paper's "176M").
    """
    p, c, H = model.patch_size, model.in_chans, model.latent_dim
    n = (model.img_size // p) ** 2

    def vit_extras(width, modulated):
        return p * p * c * width + width + (n + 1) * width + (2 * width * H + 2 * width if modulated else 0)

    dec = model.decoder
    out = {"decoder": vit_extras(dec.head.in_features, isinstance(dec.blocks[0], ModulatedBlock))}
    out["aux_decoders"] = 0
    for aux in model.aux_decoders.values():
        if isinstance(aux, Decoder):
            width = aux.head.in_features
            out["aux_decoders"] += vit_extras(width, isinstance(aux.blocks[0], ModulatedBlock)) + 1001 * width + 1000
    out["repa_projector"] = H * repa_dim + repa_dim + 2 * (repa_dim * repa_dim + repa_dim)
    return out


# --------------------------------------------------------------------------------------------
# Size registry (DiT style). Every entry takes keyword overrides of MAETok's arguments.
# --------------------------------------------------------------------------------------------
def MAETok_T(**kwargs):
    """Tiny, for 32 x 32 images (Fashion-MNIST) on CPU: 64 patches of 4 x 4, L = 32, H = 16.

    HOG cells of 2 px give 2 x 2 cells per patch, i.e. the paper's 108-d layout.
    """
    cfg = dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, num_latent_tokens=32,
               latent_dim=16, aux_embed_dim=64, aux_num_heads=2, hog_cell_size=2)
    return MAETok(**{**cfg, **kwargs})


def MAETok_XS(**kwargs):
    """The tiny-scale default (32 x 32 Fashion-MNIST on 2 CPU cores): patch 8 gives a 4 x 4 grid of
    16 image tokens and L = 8 latent tokens of H = 32 channels -- the paper's proportions (128 latent
    tokens for a 16 x 16 grid, H = 32) at 1/16 of the tokens. Width 128, depth 4. HOG cells of 4 px
    give 2 x 2 cells per patch, i.e. the paper's 108-d layout. Patch 4 (MAETok-T) reconstructs
    better per step but costs ~4x more per image, which the tiny budget cannot afford."""
    cfg = dict(img_size=32, patch_size=8, embed_dim=128, depth=4, num_heads=4, num_latent_tokens=8,
               latent_dim=32, aux_embed_dim=64, aux_num_heads=2, hog_cell_size=4)
    return MAETok(**{**cfg, **kwargs})


def MAETok_S(**kwargs):
    """Small, for 32 x 32 images on one GPU: width 256, depth 6, same latent shape as MAETok-T."""
    cfg = dict(img_size=32, patch_size=4, embed_dim=256, depth=6, num_heads=4, num_latent_tokens=32,
               latent_dim=16, aux_embed_dim=96, aux_num_heads=3, hog_cell_size=2)
    return MAETok(**{**cfg, **kwargs})


def MAETok_B_16(**kwargs):
    """The paper's tokenizer (Table 7): ViT-B/16 encoder and decoder at 256 px, L = 128, H = 32;
    aux decoders 192 wide, 3 heads, 3 layers (spec §2.7)."""
    cfg = dict(img_size=256, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_latent_tokens=128,
               latent_dim=32, aux_embed_dim=192, aux_num_heads=3, hog_cell_size=8)
    return MAETok(**{**cfg, **kwargs})


def MAETok_Fixture(**kwargs):
    """The architecture of the golden fixtures made with the official code (tests/fixtures/official,
    docs/official_weights.md): 64 px, patch 16, L = 8, H = 32; encoder 192 wide, 2 layers, 3 heads; decoder
    128 wide, 3 layers, 2 heads (head_dim 64 as in the release). The widths differ on purpose, so that an
    importer that mixes up encoder and decoder fails. Not a training size."""
    cfg = dict(img_size=64, patch_size=16, embed_dim=192, depth=2, num_heads=3, decoder_embed_dim=128,
               decoder_depth=3, decoder_num_heads=2, num_latent_tokens=8, latent_dim=32, aux_embed_dim=64,
               aux_num_heads=1, hog_cell_size=8)
    return MAETok(**{**cfg, **kwargs})


MAETok_models = {"MAETok-XS": MAETok_XS, "MAETok-T": MAETok_T, "MAETok-S": MAETok_S, "MAETok-B/16": MAETok_B_16,
                 "MAETok-Fixture": MAETok_Fixture}
