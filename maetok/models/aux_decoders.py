"""The auxiliary shallow decoders of MAETok (paper §3.2), their targets and losses (Eq. 8).

Each target gets a decoder of the pixel decoder's design with fewer layers (`Decoder`), or a linear
map (`LinearAuxDecoder`, Table 1d). `AuxDecoders` holds them and runs the transformer ones as one
grouped pass (`grouped_trunk`), which computes the same function as running them one by one
(tests/models/test_tokenizer.py: test_grouped_aux_decoders_equal_one_by_one).

Parameters the official aux decoders build but never use are not built: their 1000-way class heads,
patch_embed and pos_embed; nor is their cls token (`official_only_params` in
maetok/models/tokenizer.py counts them).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from maetok.models.attention import sdpa
from maetok.models.blocks import (
    Decoder,
    ModulatedBlock,
    apply_rope,
    compile_each,
    explicit_attention,
    grid_pos_embed,
    layer_rope,
    modulate_latents,
)

# Default aux loss per target: the official code uses MSE for HOG and negative cosine similarity for
# the DINOv2 and SigLIP features; paper Eq. 8 writes MSE for every target (docs/deviations.md). We
# default to the official choice; pass aux_losses={"dino": "mse", ...} for the paper's.
AUX_LOSS_DEFAULTS = {"pixel": "mse", "hog": "mse", "dino": "cosine", "clip": "cosine"}
# Teacher feature widths of the official code: DINOv2-L/16 and SigLIP-SO400M/16 at 256 px.
TEACHER_DIMS = {"dino": 1024, "clip": 1152}


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


def grouped_block(x, zg, blocks, rope):
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


def grouped_trunk(decoders, z, grid_size, block_fn=grouped_block):
    """`Decoder.trunk` of G decoders of one architecture, at once: z: (B, L, H) -> (G, B, N, D).
    `block_fn` runs one layer (`grouped_block`, or a compiled copy of it)."""
    G, (B, L, _), N = len(decoders), z.shape, grid_size[0] * grid_size[1]
    x = _stacked(d.mask_token for d in decoders).expand(G, B, N, -1)  # (G, B, N, D)
    if decoders[0].pos_embed is not None:
        x = x + _stacked(grid_pos_embed(d.pos_embed, grid_size, d.base_grid) for d in decoders)
    zg = z.expand(G, B, L, -1)
    latents = _grouped_linear(zg, [d.decoder_embed for d in decoders])
    latents = latents + _stacked(d.latent_pos_embed_at(grid_size) for d in decoders)
    x = torch.cat([x, latents], dim=2)  # (G, B, N + L, D)
    ropes = [d.rope(grid_size, 0, L) for d in decoders] if decoders[0].rope is not None else None
    for i, blocks in enumerate(zip(*(d.blocks for d in decoders), strict=True)):
        rope = None
        if ropes is not None:  # (G, 1, heads or 1, T, d // 2): one rotation per decoder, shared by the batch
            layer = [layer_rope(r, i) for r in ropes]
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
        self.block_fn = grouped_block

    def compile_blocks(self):
        """Regional torch.compile (see `MAETok.compile_blocks`): the grouped layer and each decoder's blocks."""
        self.block_fn = torch.compile(grouped_block)
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
