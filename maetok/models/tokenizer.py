"""MAETok: a 1D ViT autoencoder trained with mask modelling and auxiliary shallow decoders.

Paper §3 (Chen et al. 2025, arXiv 2502.03444) with the architecture details of the official code.
Reading order, as in the paper:

    image -> random_masking -> Encoder([x; latent tokens]) -> Bottleneck -> z: (B, L, H)
    z -> PixelDecoder([mask tokens; z]) -> x_rec
    z -> aux decoders -> HOG / DINOv2 / CLIP / pixel features at the masked patches

The pieces live in sibling modules: masking.py (mask ratio and token mask), blocks.py (RoPE,
attention, blocks, encoder, bottleneck, decoder), aux_decoders.py (aux decoders, targets, losses).
This module holds the model, its parameter accounting and the size registry `MAETok_models`.

Deviations from the official code, each chosen on purpose:
- attention always goes through `F.scaled_dot_product_attention`, RoPE included (blocks.py);
- parameters the official code builds but never uses are not built: the decoder's ViT
  patch_embed / pos_embed, the modulated final-norm of each decoder (its latent rows are
  discarded), the aux decoders' 1000-way class heads, patch_embed and pos_embed, and the 2.13M
  REPA projector that `MaskAEModel` builds and never calls. `official_only_params` counts them so
  totals can be compared with the paper's 176M;
- aux decoders carry no cls token (the official ones have one);
- masking uses torch's RNG (seedable) instead of NumPy's unseeded one.
"""

import torch
import torch.nn as nn
from timm.layers import LayerScale

from maetok.models.aux_decoders import (
    AUX_LOSS_DEFAULTS,
    TEACHER_DIMS,
    AuxDecoders,
    LinearAuxDecoder,
    masked_loss,
    resample_teacher_features,
)
from maetok.models.blocks import Bottleneck, Decoder, Encoder, ModulatedBlock, Rope2D, compile_each
from maetok.models.choices import AUX_DEPTHS, AUX_LOSSES, AUX_TARGETS, BOTTLENECKS, DECODER_BLOCKS, POS_EMBEDS
from maetok.models.hog import HOGGenerator
from maetok.models.masking import check_mask_ratio, random_masking, sample_mask_ratio


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
        mask_ratio_low/high, mask_ratio_dist: stage-1 mask-ratio law (`masking.sample_mask_ratio`); high = 0 disables.
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
        """timm ViT init, as the official code: Linear trunc-normal(0.02), zero bias; tokens and tables as official."""
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
        # Zero-init the latent modulation so latent rows enter each sublayer as 0 at init (official code).
        for m in self.modules():
            if isinstance(m, ModulatedBlock):
                nn.init.zeros_(m.adaLN_modulation[-1].weight)
                nn.init.zeros_(m.adaLN_modulation[-1].bias)

    def compile_blocks(self, parts=("encoder", "decoder", "aux_decoders")):
        """Regional torch.compile of `parts`: every transformer block (and the aux decoders' grouped
        layer), not the whole network. One graph per block type and shape serves every layer, and
        the on-disk Inductor cache serves every tokenizer with the same widths (the aux targets,
        depths, masking and bottleneck of the ablations live outside the blocks). The first compile
        is faster than with whole-module graphs, at the same step time (bench/bench_compile.py,
        bench/README.md). Patch embedding, bottleneck and heads stay eager."""
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
    """Parameters the official code builds for this configuration that `MAETok` does not.

    decoder: the unused ViT patch_embed + pos_embed (N + 1 slots), and the latent modulation of the
    final norm, whose rows are discarded. aux_decoders, each: unused 1000-way class head,
    patch_embed and pos_embed, final-norm modulation, and the cls token we omit. repa_projector: the
    never-called MLP 32 -> 1024 -> 1024 -> 1024 that `MaskAEModel` builds. Adding these to `model_info` gives the
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
    aux decoders 192 wide, 3 heads, 3 layers (the official code)."""
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
