"""The transformer pieces of MAETok (paper §3.1): 2D RoPE, attention, the encoder and decoder blocks,
and the encoder, bottleneck and decoder built from them.

Position information: 2D RoPE on the image tokens, a learned 1D absolute embedding on the latent
tokens, which are never rotated. Three choices of image-token position encoding: "rope_mixed"
(learnable per-layer, per-head frequencies, Heo et al. 2024; the released checkpoint), "rope_axial"
(fixed axial frequencies) and "ape" (learned absolute table).

Attention always goes through `F.scaled_dot_product_attention`, RoPE included; the official code
drops to an explicit softmax whenever RoPE is on (`explicit_attention` keeps that path for the
equality test and the benchmark).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerScale, Mlp, PatchEmbed, resample_abs_pos_embed

from maetok.models.attention import sdpa


def grid_coords(grid_size, device=None):
    """Integer (x, y) = (column, row) of each image token in raster order: (N, 2), fp32."""
    gh, gw = grid_size
    y, x = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1).float()


class Rope2D(nn.Module):
    """2D rotary frequencies for image tokens; angle = x * Fx + y * Fy per channel pair.

    mode "mixed": learnable (Fx, Fy) per layer, head and pair (Heo et al. 2024 RoPE-Mixed, the official code),
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
        # and phi + pi/2 with the same magnitudes (the official RoPE-Mixed init).
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
    """Pre-LN ViT block with LayerScale (the official encoder's DINOv2-style block)."""

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
    """Latent-modulated decoder block (the official MoVQBlockv2).

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


def layer_rope(rope, i):
    """The (cos, sin) of layer i: its own with per-layer frequencies (RoPE-Mixed), else the shared ones."""
    if rope is None:
        return None
    cos, sin = rope
    return cos[i % cos.shape[0]], sin[i % sin.shape[0]]


def grid_pos_embed(table, grid_size, base_grid, num_prefix=0):
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
    token and adds a learned absolute embedding to [cls; image tokens] even with RoPE on; it is kept so
    that the official checkpoints load (docs/official_weights.md).
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
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)  # the paper's bottleneck LayerNorm (§3.1)

    def forward(self, x, mask=None):
        """x: (B, C, H, W), mask: (B, N) bool or None -> (B, L, D) (or (B, N, D) without latents)."""
        grid = (x.shape[-2] // self.patch_embed.patch_size[0], x.shape[-1] // self.patch_embed.patch_size[1])
        x = self.patch_embed(x)  # (B, N, D)
        if mask is not None:  # masked slots keep their position: the mask token goes in before any PE
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + grid_pos_embed(self.pos_embed, grid, self.base_grid, self.num_prefix)
        num_latent = 0
        if self.has_latents:
            latents = (self.latent_tokens + self.latent_pos_embed).expand(x.shape[0], -1, -1)
            x = torch.cat([x, latents], dim=1)  # (B, prefix + N + L, D)
            num_latent = latents.shape[1]
        rope = self.rope(grid, self.num_prefix, num_latent) if self.rope is not None else None
        for i, block in enumerate(self.blocks):
            x = block(x, rope=layer_rope(rope, i))
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
    the latents get Linear(H -> D) and a learned 1D embedding, as in the official code.
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
            return grid_pos_embed(self.latent_pos_embed, grid_size, self.base_grid)
        return self.latent_pos_embed

    def trunk(self, z, grid_size):
        """Everything but the head: (B, L, H) -> normalised image-token features (B, N, D)."""
        B, L, _ = z.shape
        N = grid_size[0] * grid_size[1]
        x = self.mask_token.expand(B, N, -1)
        if self.pos_embed is not None:
            x = x + grid_pos_embed(self.pos_embed, grid_size, self.base_grid)
        x = torch.cat([x, self.decoder_embed(z) + self.latent_pos_embed_at(grid_size)], dim=1)  # (B, N + L, D)
        rope = self.rope(grid_size, 0, L) if self.rope is not None else None
        for i, block in enumerate(self.blocks):
            x = block(x, z, rope=layer_rope(rope, i))
        return self.norm(x[:, :N])
