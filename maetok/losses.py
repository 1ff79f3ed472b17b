"""Tokenizer training losses: paper Eq. 6 (+ KL for the VAE baseline, + aux losses of Eq. 8).

    L_G = MSE(x_rec, x) + lambda1 * L_percep + lambda2 * d_w * L_adv + kl_weight * KL + sum_j w_j * L_aux_j

with lambda1 = 1.0, lambda2 = 0.4, the discriminator starting at 30K steps and LeCAM 0.001
(paper App. B, Table 7). How the official code realises each term is in
`reference/official_code_spec.md` §3; where the paper and the code differ, the paper is the
default and the code's choice is a constructor argument:

- perceptual warm-up: paper none (`perceptual_warmup=0`); code 10K steps.
- discriminator consistency regularisation: paper none (`cr_weight=0`); code 4.0.
- discriminator backbone: paper "DINOv2-S"; code DINO v1 ViT-S/16 (`dino_vits16`'s default
  `model_name`, since it is the backbone the released weights were trained with).

Frozen networks come either from local weight files (paper scale: `lpips_vgg`, `dino_vits16`;
a missing file is an error naming the file and where to get it) or from the tiny stand-in
CNN (`maetok.models.standins`; `PerceptualLoss(backbone)` and `Discriminator(backbone, ...)`).
A backbone is any module with `forward_features(x) -> list of (B, C, H, W) or (B, C, N)`.
"""

import math
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_VGG_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _require_file(path, what, url, how=None):
    """`how` replaces "Download <url> on a machine with internet." where the source has more than a URL."""
    path = Path(path)
    if not path.is_file():
        how = how or f"Download {url} on a machine with internet."
        raise FileNotFoundError(
            f"{what} weights not found at '{path}'. {how} Put the file at that path (and `dvc add` it), or "
            "use the tiny-scale stand-in instead."
        )
    return path


def _load_state_dict(path):
    """A .safetensors file, or a .pth/.bin loaded with weights_only=True (no pickled code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _freeze(module):
    module.requires_grad_(False)
    return module.eval()


# --------------------------------------------------------------------------------------
# DiffAugment (Zhao et al. 2020), as in the official `utils/diff_aug.py`
# --------------------------------------------------------------------------------------
def _rand(shape, generator, device):
    return torch.rand(shape, generator=generator).to(device)


def _color(x, generator):
    """Per-sample brightness +U(-0.5, 0.5), saturation xU(0, 2), contrast xU(0.5, 1.5)."""
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1), generator, x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand((b, 1, 1, 1), generator, x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((b, 1, 1, 1), generator, x.device) + 0.5) + mean


def _translation(x, generator, ratio=0.125):
    """Per-sample integer shift of up to ratio * size; vacated pixels are zero."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=generator).to(x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=generator).to(x.device)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device),
        indexing="ij",
    )
    gy = (gy + dy + 1).clamp(0, h + 1)
    gx = (gx + dx + 1).clamp(0, w + 1)
    x_pad = F.pad(x, [1, 1, 1, 1])  # the border row/column supplies the zeros
    return x_pad.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)


def _cutout(x, generator, ratio=0.2):
    """Per-sample square of side ratio * size set to zero."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=generator).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=generator).to(x.device)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device),
        indexing="ij",
    )
    gy = (gy + oy - ch // 2).clamp(0, h - 1)
    gx = (gx + ox - cw // 2).clamp(0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


_AUGMENTS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x, policy="color,translation,cutout_0.2", prob=0.5, generator=None):
    """Differentiable augmentation of a batch x: (B, C, H, W).

    policy: comma-separated groups, each optionally `name_ratio` (e.g. "cutout_0.5").
    Each group is applied to the whole batch with probability `prob`, one coin per group
    per call; the random parameters inside a group are drawn per sample (official code).
    All draws come from `generator` (CPU) when given, else from torch's global RNG.
    """
    for group in filter(None, policy.split(",")):
        name, _, ratio = group.partition("_")
        if prob < 1 and torch.rand((), generator=generator).item() >= prob:
            continue
        x = _AUGMENTS[name](x, generator, *([float(ratio)] if ratio else []))
    return x


# --------------------------------------------------------------------------------------
# GAN terms
# --------------------------------------------------------------------------------------
def hinge_d_loss(logits_real, logits_fake):
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake):
    return -logits_fake.mean()


def lecam_reg(logits_real, logits_fake, ema_real, ema_fake):
    """LeCAM (Tseng et al. 2021): pulls D(real) below the fake EMA and D(fake) above the real EMA."""
    return F.relu(logits_real - ema_fake).pow(2).mean() + F.relu(ema_real - logits_fake).pow(2).mean()


class LeCAM(nn.Module):
    """EMAs of the batch-mean real/fake logits (decay 0.999, init 0), updated before R is taken.

    With `distributed = True` (set by the trainer under torch.distributed) the batch means are
    averaged over the processes first, so every rank holds the EMAs of the global batch: the
    same values on every rank, and the same as one process with that batch.
    """

    def __init__(self, decay=0.999):
        super().__init__()
        self.decay = decay
        self.distributed = False
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    @torch.no_grad()
    def update(self, logits_real, logits_fake):
        means = torch.stack([logits_real.mean().float(), logits_fake.mean().float()])
        if self.distributed:
            dist.all_reduce(means)
            means /= dist.get_world_size()
        self.ema_real.mul_(self.decay).add_(means[0], alpha=1 - self.decay)
        self.ema_fake.mul_(self.decay).add_(means[1], alpha=1 - self.decay)

    def forward(self, logits_real, logits_fake):
        self.update(logits_real, logits_fake)
        return lecam_reg(logits_real, logits_fake, self.ema_real, self.ema_fake)


def adaptive_weight(rec_loss, g_loss, last_layer, max_weight=1e4, eps=1e-4):
    """VQGAN's d_w = ||grad_W rec_loss|| / (||grad_W g_loss|| + eps), clamped to [0, max_weight], detached.

    W is the pixel decoder's last layer weight (at MAETok-B/16, its 768x768 output Linear).
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + eps)).clamp(0.0, max_weight).detach()


# --------------------------------------------------------------------------------------
# Perceptual loss
# --------------------------------------------------------------------------------------
def _unit(f):
    """f / max(||f||_2 over channels, 1e-10): F.normalize's result, faster on CPU for 4-D maps."""
    return f * f.square().sum(1, keepdim=True).clamp_min(1e-20).rsqrt()


class PerceptualLoss(nn.Module):
    """LPIPS-style distance (Zhang et al. 2018) over the stages of a frozen backbone.

    d(x, y) = sum_l mean_hw sum_c w_lc (f_l(x) - f_l(y))_c^2 with f_l unit-normalised over
    channels, averaged over the batch. With `lin_weights` (LPIPS's learned 1x1 heads) this
    is LPIPS. Without, every channel weighs 1 / (2 L) for L stages, i.e. the mean over
    stages of (1 - cos) per position, which lies in [0, 1] for ReLU features like LPIPS-VGG.
    Inputs are in [-1, 1]; `shift`/`scale` is LPIPS's input ScalingLayer.
    """

    def __init__(self, backbone, lin_weights=None, shift=None, scale=None):
        super().__init__()
        # channels-last: oneDNN's (and tensor cores') preferred conv layout; 10% faster here on CPU
        self.backbone = _freeze(backbone).to(memory_format=torch.channels_last)
        self.learned = lin_weights is not None
        for i, w in enumerate(lin_weights or []):
            self.register_buffer(f"lin{i}", w.flatten())
        self.register_buffer("shift", torch.zeros(3) if shift is None else torch.tensor(shift))
        self.register_buffer("scale", torch.ones(3) if scale is None else torch.tensor(scale))

    def train(self, mode=True):
        return super().train(False)  # the feature network always runs in eval mode

    def _features(self, x):
        """Unit-normalised stage maps in fp32 (the network may run in bf16 under autocast; the
        distance is summed in fp32); an input without grad (the target) runs under no_grad,
        which saves its half of the backward pass."""
        shift, scale = self.shift.view(1, -1, 1, 1), self.scale.view(1, -1, 1, 1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            feats = self.backbone.forward_features(((x - shift) / scale).contiguous(memory_format=torch.channels_last))
            return [_unit(f.float()) for f in feats]

    def forward(self, x, y):
        """x, y: (B, 3, H, W) in [-1, 1] -> scalar."""
        dist = x.new_zeros(())
        feats_x, feats_y = self._features(x), self._features(y)
        for i, (fx, fy) in enumerate(zip(feats_x, feats_y, strict=True)):
            d2 = (fx - fy).pow(2)
            if not self.learned:
                d = d2.sum(1) / (2 * len(feats_x))
            else:
                d = torch.einsum("bc...,c->b...", d2, getattr(self, f"lin{i}"))
            dist = dist + d.flatten(1).mean(1).mean()
        return dist


class VGG16Features(nn.Module):
    """torchvision VGG16 `features`, tapped at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (LPIPS)."""

    taps = (3, 8, 15, 22, 29)
    channels = (64, 128, 256, 512, 512)

    def __init__(self):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["D"])[: self.taps[-1] + 1]

    def forward_features(self, x):
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return feats


def lpips_vgg(vgg_path, lin_path):
    """LPIPS-VGG from local files: torchvision's vgg16-397923af.pth and LPIPS v0.1 vgg.pth.

    Both are the files the official code loads (taming/LlamaGen `vgg_lpips`).
    """
    vgg_path = _require_file(vgg_path, "VGG16 (torchvision IMAGENET1K_V1)", VGG16_URL)
    lin_path = _require_file(lin_path, "LPIPS v0.1 VGG linear heads", LPIPS_VGG_URL)
    vgg_sd, lin_sd = _load_state_dict(vgg_path), _load_state_dict(lin_path)
    backbone = VGG16Features()
    features_sd = {k.removeprefix("features."): v for k, v in vgg_sd.items() if k.startswith("features.")}
    backbone.features.load_state_dict({k: v for k, v in features_sd.items() if int(k.split(".")[0]) <= 29})
    lin_weights = []
    for i, c in enumerate(VGG16Features.channels):
        key = next((k for k in lin_sd if k.endswith(f"lin{i}.model.1.weight")), None)
        if key is None or lin_sd[key].numel() != c:
            raise KeyError(f"'{lin_path}' has no LPIPS head 'lin{i}.model.1.weight' with {c} channels")
        lin_weights.append(lin_sd[key].float())
    return PerceptualLoss(backbone, lin_weights, shift=(-0.030, -0.088, -0.188), scale=(0.458, 0.448, 0.450))


# --------------------------------------------------------------------------------------
# Discriminator: frozen backbone + trainable heads per tapped layer (the official DinoDisc)
# --------------------------------------------------------------------------------------
class DinoViTFeatures(nn.Module):
    """Frozen timm ViT tapped as the official DINO discriminator.

    Five token maps (B, D, N): patch embedding + pos-embed, and the outputs of blocks
    2, 5, 8, 11; the cls token is added to every patch token and the final norm is not
    applied. Input [-1, 1] -> ImageNet normalisation; at any size other than `img_size`,
    a random crop of img_size/256 of the side is taken with probability 0.5, else the
    whole image, then resized to `img_size` (at 256 px: the official 224 crop / area
    resize; the official D is always in train mode, so this is always on).
    """

    def __init__(self, vit, taps=(2, 5, 8, 11), img_size=224):
        super().__init__()
        self.vit = _freeze(vit)
        self.taps, self.img_size = tuple(taps), img_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _resize(self, x):
        size = x.shape[-1]
        if size == self.img_size:
            return x
        if torch.rand(()).item() < 0.5:
            crop = round(size * self.img_size / 256)
            i, j = torch.randint(0, size - crop + 1, (2,)).tolist()
            x = x[..., i : i + crop, j : j + crop]
        mode = "area" if x.shape[-1] > self.img_size else "bicubic"
        return F.interpolate(x, size=(self.img_size, self.img_size), mode=mode)

    def _readout(self, t):
        n = self.vit.num_prefix_tokens
        return (t[:, n:] + t[:, :1]).transpose(1, 2)  # (B, D, N)

    def forward_features(self, x):
        x = self._resize(((x + 1) / 2 - self.mean) / self.std)
        t = self.vit.norm_pre(self.vit._pos_embed(self.vit.patch_embed(x)))
        feats = [self._readout(t)]
        for i, block in enumerate(self.vit.blocks):
            t = block(t)
            if i in self.taps:
                feats.append(self._readout(t))
        return feats


def dino_vits16(weights_path, model_name="vit_small_patch16_224.dino"):
    """Frozen DINO ViT-S/16 from a local file (official: dino_deitsmall16_pretrain.pth).

    The key bias of every qkv projection is zeroed, as in the official code. For the
    paper's "DINOv2-S" pass model_name="vit_small_patch14_dinov2.lvd142m" and its file.
    """
    import timm

    from maetok.models.teachers import download_hint

    # The hint comes from timm's config of `model_name`, so it offers a file that loads into that model.
    path = _require_file(weights_path, f"discriminator backbone {model_name} (params.yaml "
                         "`tokenizer.networks.disc_weights` for `disc_model`)", None, download_hint(model_name))
    kwargs = {"img_size": 224} if "dinov2" in model_name else {}
    vit = timm.create_model(model_name, pretrained=True, num_classes=0,
                            pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    with torch.no_grad():
        for block in vit.blocks:
            if block.attn.qkv.bias is not None:
                d = block.attn.qkv.bias.shape[0] // 3
                block.attn.qkv.bias[d : 2 * d].zero_()
    return DinoViTFeatures(vit)


def _sn_conv(in_chans, out_chans, kernel_size=1):
    conv = nn.Conv1d(in_chans, out_chans, kernel_size, padding=kernel_size // 2, padding_mode="circular")
    return spectral_norm(conv, n_power_iterations=1)


class DiscHead(nn.Module):
    """SNConv1d(k=1)-BN-LReLU, residual [SNConv1d(k=9, circular)-BN-LReLU] / sqrt(2), SNConv1d -> 1 logit per token.

    The official code (github.com/Hhhhhhao/continuous_tokenizer) uses SyncBatchNorm. The head is
    built with BatchNorm1d, which is exact in one process; the trainer converts it with
    `sync_batchnorm` when it runs in several.
    """

    def __init__(self, channels, kernel_size=9):
        super().__init__()
        self.proj = nn.Sequential(_sn_conv(channels, channels), nn.BatchNorm1d(channels), nn.LeakyReLU(0.2))
        self.res = nn.Sequential(_sn_conv(channels, channels, kernel_size), nn.BatchNorm1d(channels),
                                 nn.LeakyReLU(0.2))
        self.out = _sn_conv(channels, 1)

    def forward(self, x):
        """x: (B, C, N) -> (B, N)."""
        h = self.proj(x)
        h = (h + self.res(h)) / math.sqrt(2)
        return self.out(h).squeeze(1)


class AllReduceBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training-mode statistics cover the batches of all processes.

    `nn.SyncBatchNorm` does this on GPUs but refuses CPU tensors (the gloo path of a CPU
    run with several processes). Here the per-channel sums, counts and squared deviations
    are summed with the autograd-aware all-reduce of `torch.distributed.nn`: its backward
    sums the gradients of the shared statistics over the processes, as SyncBatchNorm's
    backward does, so the gradients are those of one batch norm over the global batch.
    Running statistics take the global mean and unbiased variance, the same on every rank.
    In one process, or in eval mode, this is plain BatchNorm1d.
    """

    def forward(self, x):
        """x: (B, C) or (B, C, N)."""
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()  # statistics in fp32 under bf16 autocast
        local = torch.cat([xf.sum(dims), xf.new_tensor([x.numel() / x.shape[1]])])
        total = all_reduce(local)
        n = total[-1].detach()
        mean = total[:-1] / n
        var = all_reduce((xf - mean.view(shape)).square().sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), factor)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(module, device):
    """`module` with every BatchNorm1d replaced by one that normalises over all processes'
    batches: `nn.SyncBatchNorm` on GPUs, `AllReduceBatchNorm1d` on other devices. The new
    layers share the old ones' parameters and buffers, so an optimiser built before still
    holds the right tensors."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.BatchNorm1d) and not isinstance(module, AllReduceBatchNorm1d):
        new = AllReduceBatchNorm1d(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        return new.train(module.training)
    for name, child in module.named_children():
        converted = sync_batchnorm(child, device)
        if converted is not child:
            module.add_module(name, converted)
    return module


class Discriminator(nn.Module):
    """Frozen feature backbone + one trainable `DiscHead` per tapped map.

    `channels`: channel count of each map from `backbone.forward_features`. The output is
    (B, sum_l N_l) logits, one per token per level. Following the official code, the
    heads always use batch statistics (the module stays in train mode) while the
    backbone stays in eval mode.
    """

    def __init__(self, backbone, channels, kernel_size=9):
        super().__init__()
        self.backbone = _freeze(backbone)
        self.heads = nn.ModuleList(DiscHead(c, kernel_size) for c in channels)

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x):
        """x: (B, 3, H, W) in [-1, 1] -> (B, sum_l N_l)."""
        feats = self.backbone.forward_features(x)
        return torch.cat([head(f.flatten(2)) for head, f in zip(self.heads, feats, strict=True)], dim=1)


# --------------------------------------------------------------------------------------
# Eq. 6 combined
# --------------------------------------------------------------------------------------
class TokenizerLoss(nn.Module):
    """Reconstruction + perceptual + adaptive adversarial (+ KL, + aux) generator loss, and the D loss.

    perceptual: a `PerceptualLoss`, or None for no perceptual term.
    discriminator: a `Discriminator`, or None for no GAN at all.
    perceptual_weight (lambda1) is 0 before step `perceptual_start`, then ramps linearly over
    `perceptual_warmup` steps (0 = none).
    disc_weight (lambda2) applies from `disc_start` on (the adversarial term is exactly 0
    before, and D is not run). With `adaptive=True` the adversarial term is scaled by
    `adaptive_weight` at the decoder's last layer.
    D loss = disc_weight * (hinge + lecam_weight * LeCAM) + cr_weight * consistency
    (official `vq_loss.py`: LeCAM is part of the D loss only, scaled like the hinge).
    kl_weight scales the `kl` passed to `generator_loss` (VAE baseline only; the paper gives
    no value, 1e-6 is the LDM KL-autoencoder weight for a KL summed over latent dims).
    `state_dict()` includes the frozen backbones; what trains is `discriminator.heads`
    (plus the `lecam` EMAs to resume).
    """

    def __init__(self, perceptual=None, discriminator=None, *, perceptual_weight=1.0, perceptual_warmup=0,
                 perceptual_start=0,
                 disc_weight=0.4, disc_start=30_000, adaptive=True, max_d_weight=1e4, lecam_weight=1e-3,
                 lecam_decay=0.999, cr_weight=0.0, diffaug_policy="color,translation,cutout_0.2", diffaug_prob=0.5,
                 cr_policy="color,translation,cutout_0.5", kl_weight=1e-6):
        super().__init__()
        self.perceptual = perceptual
        self.discriminator = discriminator
        self.lecam = LeCAM(lecam_decay)
        self.perceptual_weight, self.perceptual_warmup = perceptual_weight, perceptual_warmup
        self.perceptual_start = perceptual_start
        self.disc_weight, self.disc_start = disc_weight, disc_start
        self.adaptive, self.max_d_weight = adaptive, max_d_weight
        self.lecam_weight, self.cr_weight = lecam_weight, cr_weight
        self.diffaug_policy, self.diffaug_prob, self.cr_policy = diffaug_policy, diffaug_prob, cr_policy
        self.kl_weight = kl_weight

    def gan_active(self, step):
        """Whether D is trained and the adversarial term is on at this global step."""
        return self.discriminator is not None and self.disc_weight > 0 and step >= self.disc_start

    def perceptual_active(self, step):
        """Whether the perceptual network runs at this global step (from `perceptual_start` on)."""
        return self.perceptual is not None and step >= self.perceptual_start

    def perceptual_factor(self, step):
        if not self.perceptual_active(step):
            return 0.0
        since = step - self.perceptual_start
        ramp = min(1.0, since / self.perceptual_warmup) if self.perceptual_warmup > 0 else 1.0
        return self.perceptual_weight * ramp

    def _augment(self, x):
        return diff_augment(x, self.diffaug_policy, self.diffaug_prob)

    def generator_loss(self, x, x_rec, step, last_layer=None, aux_losses=None, kl=None):
        """x, x_rec: (B, 3, H, W) in [-1, 1]; last_layer: the decoder's output weight (for d_w).

        aux_losses: {name: loss} (weight 1, as the official code) or {name: (loss, weight)}.
        Returns named terms; "loss" carries the graph, the rest are detached.
        Without grad (validation) d_w cannot be computed and is 0, as in taming.
        """
        zero = x_rec.new_zeros(())
        rec = F.mse_loss(x_rec, x)
        p_factor = self.perceptual_factor(step)
        percep = self.perceptual(x_rec, x) if self.perceptual_active(step) else zero
        nll = rec + p_factor * percep
        g_adv, d_weight = zero, zero
        if self.gan_active(step):
            g_adv = hinge_g_loss(self.discriminator(self._augment(x_rec)))
            if not torch.is_grad_enabled():
                d_weight = zero
            elif self.adaptive:
                if last_layer is None:
                    raise ValueError("the adaptive GAN weight needs the decoder's last layer weight (last_layer)")
                d_weight = adaptive_weight(nll, g_adv, last_layer, self.max_d_weight)
            else:
                d_weight = torch.ones_like(zero)
        adv = self.disc_weight * d_weight * g_adv if self.gan_active(step) else zero
        kl_term = self.kl_weight * kl if kl is not None else zero
        out = {"rec": rec, "perceptual": percep, "perceptual_factor": p_factor, "g_adv": g_adv,
               "d_weight": d_weight, "adv": adv, "kl": kl if kl is not None else zero}
        loss = nll + adv + kl_term
        for name, value in (aux_losses or {}).items():
            aux, weight = value if isinstance(value, tuple) else (value, 1.0)
            loss = loss + weight * aux
            out[f"aux/{name}"] = aux
        out = {k: v.detach() if torch.is_tensor(v) else torch.tensor(float(v)) for k, v in out.items()}
        return {"loss": loss, **out}

    def discriminator_loss(self, x, x_rec, step):
        """Hinge + LeCAM (+ consistency) on DiffAugmented real/fake; zeros (D not run) before disc_start.

        When `gan_active(step)` is False the returned "loss" has no graph: skip the D update.
        """
        zero = x.new_zeros(())
        if not self.gan_active(step):
            return {"loss": zero, "hinge": zero, "lecam": zero, "cr": zero, "logits_real": zero, "logits_fake": zero}
        x, x_rec = x.detach(), x_rec.detach()
        logits_real = self.discriminator(self._augment(x))
        logits_fake = self.discriminator(self._augment(x_rec))
        hinge = hinge_d_loss(logits_real, logits_fake)
        lecam = self.lecam(logits_real, logits_fake) if self.lecam_weight > 0 else zero
        loss = self.disc_weight * (hinge + self.lecam_weight * lecam)
        cr = zero
        if self.cr_weight > 0:
            # official: strong augmentation with prob 1; MSE between weak- and strong-view logits
            real_s = self.discriminator(diff_augment(x, self.cr_policy, 1.0))
            fake_s = self.discriminator(diff_augment(x_rec, self.cr_policy, 1.0))
            cr = F.mse_loss(torch.cat([logits_real, logits_fake]), torch.cat([real_s, fake_s]))
            loss = loss + self.cr_weight * cr
        return {"loss": loss, "hinge": hinge.detach(), "lecam": lecam.detach(), "cr": cr.detach(),
                "logits_real": logits_real.detach().mean(), "logits_fake": logits_fake.detach().mean()}
