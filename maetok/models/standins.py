"""Stand-in networks for `scale: tiny` (DESIGN.md, "Stand-ins at scale: tiny").

At paper scale MAETok uses weights that need the internet: DINOv2-L and SigLIP as
aux-decoder targets, LPIPS-VGG for the perceptual loss, DINO ViT-S/16 as the
discriminator backbone, and Inception-v3 for FID/IS/PR. At tiny scale (32x32x3
Fashion-MNIST in [-1, 1]) each role is filled by a small CNN trained here on the CPU:

- "clip" teacher: `SmallCNN` trained with labels (`train_supervised`).
- "dino" teacher: `SmallCNN` trained without labels (`train_self_supervised`, SimCLR).
  The same frozen net is the perceptual-loss network and the discriminator backbone
  (see `maetok.losses`).
- FID/IS/PR: `Evaluator`, a classifier trained on the train split, registered with
  torch-fidelity as a feature extractor (`register_evaluator`).

Weights are saved as safetensors only (`save_weights` / `load_weights`).
"""

import math
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_fidelity
from safetensors.torch import load_file, save_file
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from tqdm import tqdm

from maetok.utils.device import bf16_autocast

IMG_SIZE = 32


def _conv_bn_relu(in_chans, out_chans, stride=1):
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(),
    )


class SmallCNN(nn.Module):
    """Three conv stages for 32x32 images in [-1, 1].

    Stage maps are (B, 32, 32, 32), (B, 64, 16, 16), (B, 128, 8, 8) with the default
    widths, and the pooled feature is (B, 128). The first stage is a single conv at full
    resolution: a second full-resolution conv would double the CPU time for little gain.
    """

    def __init__(self, channels=(32, 64, 128), num_classes=0, in_chans=3):
        super().__init__()
        c1, c2, c3 = channels
        self.stages = nn.ModuleList([
            _conv_bn_relu(in_chans, c1),
            nn.Sequential(_conv_bn_relu(c1, c2, stride=2), _conv_bn_relu(c2, c2)),
            nn.Sequential(_conv_bn_relu(c2, c3, stride=2), _conv_bn_relu(c3, c3)),
        ])
        self.stage_channels = tuple(channels)
        self.num_features = c3
        self.head = nn.Linear(c3, num_classes) if num_classes else nn.Identity()
        self.initialize_weights()

    def initialize_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        """x: (B, 3, H, W) in [-1, 1] -> list of stage maps (B, C_l, H_l, W_l)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x):
        """x: (B, 3, H, W) -> (stage maps, pooled (B, C)). Class logits: `self.head(pooled)`."""
        feats = self.forward_features(x)
        return feats, feats[-1].mean(dim=(2, 3))


class Evaluator(SmallCNN):
    """Classifier whose pooled feature stands in for Inception's pool3 at tiny scale."""

    def __init__(self, channels=(32, 64, 128), num_classes=10):
        super().__init__(channels, num_classes)


def count_params(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------
# Data helpers
# --------------------------------------------------------------------------------------
def to_model_input(images):
    """uint8 (B, H, W), (B, 1|3, H, W) in [0, 255], or float already in [-1, 1] -> float (B, 3, H, W)."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def _random_view(x, gen, scale=(1.0, 1.0), max_shift=0.0, jitter=0.0):
    """Batched random crop-and-resize, horizontal flip, translation and brightness/contrast jitter.

    scale: range of the crop's side as a fraction of the image side; max_shift: extra
    translation as a fraction of the half side (grid units); jitter: strength of the
    per-sample brightness/contrast change. Every draw comes from `gen`.
    """
    b = x.shape[0]
    s = torch.empty(b).uniform_(*scale, generator=gen)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * ((1 - s)[:, None] + max_shift)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s * flip
    theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        brightness = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter * 0.5
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean + brightness
    return x


def _split_holdout(n, holdout, gen):
    perm = torch.randperm(n, generator=gen)
    n_eval = int(round(n * holdout))
    return perm[n_eval:], perm[:n_eval]


def _batches(n, batch_size, gen):
    """Endless stream of index batches: shuffled epochs, last partial batch dropped."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


def _lr_at(step, steps, lr, warmup_frac=0.05):
    warmup = max(1, int(steps * warmup_frac))
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _step(opt, loss, loss_ema, pbar):
    """One optimiser step on `loss`; returns the updated running loss (shown on the progress bar)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
    pbar.set_postfix(loss=f"{loss_ema:.3f}", refresh=False)
    return loss_ema


@torch.no_grad()
def embed(backbone, images, batch_size=500):
    """Pooled features (N, C) of uint8/float images, in eval mode."""
    was_training = backbone.training
    backbone.eval()
    chunks = range(0, len(images), batch_size)
    out = torch.cat([backbone(to_model_input(images[i : i + batch_size]))[1] for i in chunks])
    backbone.train(was_training)
    return out


@torch.no_grad()
def accuracy(model, images, labels, batch_size=500):
    """Top-1 accuracy of `model.head` on the pooled features."""
    logits = model.head(embed(model, images, batch_size))
    return (logits.argmax(1) == torch.as_tensor(labels).long()).float().mean().item()


@torch.no_grad()
def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k=20, temperature=0.07):
    """Weighted k-NN on cosine similarity (InstDisc / DINO evaluation protocol)."""
    train_feats, test_feats = F.normalize(train_feats, dim=1), F.normalize(test_feats, dim=1)
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for i in range(0, len(test_feats), 1000):
        sim, idx = (test_feats[i : i + 1000] @ train_feats.T).topk(k, dim=1)
        votes = torch.zeros(len(idx), num_classes).scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        correct += (votes.argmax(1) == test_labels[i : i + 1000]).sum().item()
    return correct / len(test_feats)


def _eval_split(images, labels, eval_data, holdout, gen):
    """(train images, train labels, eval images, eval labels); holds out a seeded split if no eval_data."""
    if eval_data is not None:
        return images, labels, eval_data[0], eval_data[1]
    if labels is None:
        return images, None, None, None
    train_idx, eval_idx = _split_holdout(len(images), holdout, gen)
    labels = torch.as_tensor(labels)
    return images[train_idx.numpy()], labels[train_idx], images[eval_idx.numpy()], labels[eval_idx]


# --------------------------------------------------------------------------------------
# Training: supervised ("clip" teacher, evaluator) and self-supervised ("dino" teacher)
# --------------------------------------------------------------------------------------
def train_supervised(backbone, images, labels, steps, batch_size=256, lr=2e-3, seed=0, progress=True,
                     eval_data=None, holdout=0.1, weight_decay=5e-4, bf16=False):
    """Cross-entropy training of `backbone` (a SmallCNN with a class head) in place.

    images: uint8 (N, [C,] H, W) or float in [-1, 1]; labels: (N,) ints. Augmentation is
    flip + up to 2 px translation. Accuracy is measured on `eval_data = (images, labels)`
    or, if that is None, on a seeded `holdout` fraction kept out of training.
    Deterministic on CPU for a given seed. Returns a metrics dict.
    """
    gen = torch.Generator().manual_seed(seed)
    images, labels, eval_images, eval_labels = _eval_split(images, labels, eval_data, holdout, gen)
    labels = torch.as_tensor(labels).long()
    opt = torch.optim.AdamW(backbone.parameters(), lr=lr, weight_decay=weight_decay)
    batches = _batches(len(images), batch_size, gen)
    backbone.train()
    start, loss_ema = time.time(), None
    for step in (pbar := tqdm(range(steps), disable=not progress, desc="train_supervised")):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        idx = next(batches)
        x = _random_view(to_model_input(images[idx.numpy()]), gen, max_shift=2 / (IMG_SIZE / 2))
        with bf16_autocast("cpu", bf16):
            loss = F.cross_entropy(backbone.head(backbone(x)[1]).float(), labels[idx])
        loss_ema = _step(opt, loss, loss_ema, pbar)
    seconds = time.time() - start
    backbone.eval()
    return {
        "steps": steps,
        "train_seconds": seconds,
        "images_per_second": steps * batch_size / seconds,
        "final_loss": loss_ema,
        "test_acc": accuracy(backbone, eval_images, eval_labels),
        "num_eval": len(eval_labels),
    }


def nt_xent(z1, z2, temperature=0.2):
    """SimCLR's normalised-temperature cross-entropy over 2B views (Chen et al. 2020)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, targets)


def train_self_supervised(backbone, images, steps, batch_size=256, lr=2e-3, seed=0, progress=True,
                          labels=None, eval_data=None, holdout=0.1, weight_decay=5e-4, temperature=0.2,
                          knn_bank=10_000, bf16=False):
    """SimCLR (two augmented views, NT-Xent) training of `backbone` in place; labels are never trained on.

    Why SimCLR for the "dino" stand-in: like DINO it learns from two views of each image
    without labels, but the contrastive negatives rule out the collapse that
    self-distillation (DINO/BYOL/SimSiam) can fall into in a few hundred CPU steps.
    Views: crop of 60-100% side + resize, flip, brightness/contrast jitter.

    If `labels` (or `eval_data`) are given, reports a weighted 20-NN accuracy of the pooled
    features on the held-out split, before (`knn_acc_init`) and after training (`knn_acc`).
    The projector (C -> 256 -> 128) is discarded after training.
    """
    gen = torch.Generator().manual_seed(seed)
    images, labels, eval_images, eval_labels = _eval_split(images, labels, eval_data, holdout, gen)
    probe = eval_labels is not None
    if probe:
        bank_idx = torch.randperm(len(images), generator=gen)[:knn_bank].numpy()
        bank_labels = torch.as_tensor(labels)[bank_idx]

    def knn():
        return knn_accuracy(embed(backbone, images[bank_idx]), bank_labels, embed(backbone, eval_images), eval_labels)

    metrics = {"knn_acc_init": knn()} if probe else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        c = backbone.num_features
        projector = nn.Sequential(nn.Linear(c, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 128))
    params = list(backbone.parameters()) + list(projector.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    batches = _batches(len(images), batch_size, gen)
    backbone.train()
    start, loss_ema = time.time(), None
    for step in (pbar := tqdm(range(steps), disable=not progress, desc="train_self_supervised")):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        x = to_model_input(images[next(batches).numpy()])
        views = torch.cat([_random_view(x, gen, scale=(0.6, 1.0), jitter=0.4) for _ in range(2)])
        with bf16_autocast("cpu", bf16):
            z = projector(backbone(views)[1]).float()
        loss = nt_xent(*z.chunk(2), temperature=temperature)
        loss_ema = _step(opt, loss, loss_ema, pbar)
    seconds = time.time() - start
    backbone.eval()
    metrics.update(steps=steps, train_seconds=seconds, images_per_second=steps * batch_size / seconds,
                   final_loss=loss_ema, method="simclr")
    if probe:
        metrics.update(knn_acc=knn(), num_eval=len(eval_labels))
    return metrics


@torch.no_grad()
def teacher_features(backbone, x, grid):
    """Aux-decoder targets: last stage map resampled (bilinear) to a grid x grid patch grid.

    x: (B, 3, H, W) in [-1, 1] -> (B, grid * grid, C). The caller keeps `backbone` frozen
    and in eval mode; this plays the role of DINOv2 / SigLIP patch tokens (spec §2.7).
    """
    f = backbone.forward_features(x.contiguous(memory_format=torch.channels_last))[-1]
    if f.shape[-2:] != (grid, grid):
        f = F.interpolate(f, size=(grid, grid), mode="bilinear", align_corners=False)
    return f.flatten(2).transpose(1, 2)  # (B, grid*grid, C)


# --------------------------------------------------------------------------------------
# Weights (safetensors only)
# --------------------------------------------------------------------------------------
def save_weights(module, path, metadata=None):
    """Atomically write `module.state_dict()` to a safetensors file (str -> str `metadata`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_weights(module, path):
    """Load a safetensors state dict into `module` (strict); returns the module."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stand-in weights '{path}' not found; build them with rule train_standin "
                                f"(`snakemake {path}`).")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        from maetok.train.checkpoint import CheckpointError

        raise CheckpointError(f"stand-in weights '{path}' are unreadable ({e}); delete the file and rebuild it "
                              f"with rule train_standin (`snakemake {path}`).") from None
    module.load_state_dict(state)
    return module


# --------------------------------------------------------------------------------------
# torch-fidelity feature extractor (FID / IS / precision-recall at tiny scale)
# --------------------------------------------------------------------------------------
EVALUATOR_NAME = "maetok-tiny-evaluator"


class EvaluatorFeatureExtractor(FeatureExtractorBase):
    """The trained `Evaluator` as a torch-fidelity feature extractor.

    Features: "feat" (pooled penultimate, 128-d; FID, KID, PR) and "logits_unbiased"
    (class logits without the head bias, as torch-fidelity's Inception; IS).
    Inputs are uint8 (B, 3, H, W) in [0, 255]; they are mapped to [-1, 1] and, if needed,
    resized to 32x32.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"'{name}' needs feature_extractor_weights_path (the trained evaluator weights); "
                             "it is never used with random weights.")
        self.net = load_weights(Evaluator(), feature_extractor_weights_path).to(memory_format=torch.channels_last)
        self.requires_grad_(False).eval()

    @staticmethod
    def get_provided_features_list():
        return "feat", "logits_unbiased"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "feat", "kid": "feat", "prc": "feat"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return (torch.rand([1, 3, IMG_SIZE, IMG_SIZE]) * 255).to(torch.uint8)

    def forward(self, x):
        x = x.float() / 127.5 - 1.0
        if x.shape[-2:] != (IMG_SIZE, IMG_SIZE):
            x = F.interpolate(x, size=(IMG_SIZE, IMG_SIZE), mode="bilinear", antialias=True, align_corners=False)
        # channels-last: oneDNN's preferred layout on CPU, 1.4x faster here (features equal to ~1e-6)
        feat = self.net(x.contiguous(memory_format=torch.channels_last))[1]
        out = {"feat": feat, "logits_unbiased": feat @ self.net.head.weight.T}
        return tuple(out[k] for k in self.features_list)


def register_evaluator(weights_path):
    """Register the evaluator with torch-fidelity once per process; returns its name.

    Pass `feature_extractor=<name>, feature_extractor_weights_path=weights_path` to
    `torch_fidelity.calculate_metrics`.
    """
    if not Path(weights_path).is_file():
        raise FileNotFoundError(f"evaluator weights '{weights_path}' not found; build them with rule "
                                f"train_standin (`snakemake {weights_path}`).")
    registered = FEATURE_EXTRACTORS_REGISTRY.get(EVALUATOR_NAME)
    if registered is None:
        torch_fidelity.register_feature_extractor(EVALUATOR_NAME, EvaluatorFeatureExtractor)
    elif registered is not EvaluatorFeatureExtractor:
        raise RuntimeError(f"torch-fidelity name '{EVALUATOR_NAME}' is taken by {registered!r}")
    return EVALUATOR_NAME


def seeded(factory, seed):
    """Build `factory()` with a fixed torch seed, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


# Roles -> constructors. Teachers keep a 10-way head only when trained with labels.
Standin_models = {
    "teacher-clip": lambda: SmallCNN(num_classes=10),
    "teacher-dino": SmallCNN,
    "evaluator": Evaluator,
}

