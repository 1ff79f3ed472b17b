"""Stand-in networks for `scale: tiny` (README: the `tiny` scale).

At paper scale MAETok uses weights that need the internet: DINOv2-L and SigLIP as
aux-decoder targets, LPIPS-VGG for the perceptual loss, DINO ViT-S/16 as the
discriminator backbone, and Inception-v3 for FID/IS/PR. At tiny scale (32x32x3
Fashion-MNIST in [-1, 1]) each role is filled by a small CNN trained here on the CPU:

- "clip" teacher: `SmallCNN` trained with labels (maetok/train/standins.py: `train_supervised`).
- "dino" teacher: `SmallCNN` trained without labels (`train_self_supervised`, SimCLR).
  The same frozen net is the perceptual-loss network and the discriminator backbone
  (see `maetok.losses`).
- FID/IS/PR: `Evaluator`, a classifier trained on the train split, registered with
  torch-fidelity as a feature extractor (`register_evaluator`).

Weights are saved as safetensors only (`save_weights` / `load_weights`).
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_fidelity
from safetensors.torch import load_file
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from maetok.models.io import CheckpointError, save_weights  # noqa: F401 - stand-ins are saved like every model

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


@torch.no_grad()
def teacher_features(backbone, x, grid):
    """Aux-decoder targets: last stage map resampled (bilinear) to a grid x grid patch grid.

    x: (B, 3, H, W) in [-1, 1] -> (B, grid * grid, C). The caller keeps `backbone` frozen
    and in eval mode; this plays the role of DINOv2 / SigLIP patch tokens (paper §3.2).
    """
    f = backbone.forward_features(x.contiguous(memory_format=torch.channels_last))[-1]
    if f.shape[-2:] != (grid, grid):
        f = F.interpolate(f, size=(grid, grid), mode="bilinear", align_corners=False)
    return f.flatten(2).transpose(1, 2)  # (B, grid*grid, C)


# --------------------------------------------------------------------------------------
# Weights (safetensors only)
# --------------------------------------------------------------------------------------
def load_weights(module, path):
    """Load a safetensors state dict into `module` (strict); returns the module."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stand-in weights '{path}' not found; build them with rule train_standin "
                                f"(`snakemake {path}`).")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
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

