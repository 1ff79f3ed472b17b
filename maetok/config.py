"""Strict configuration: params.yaml -> frozen dataclasses, one per stage.

Field names equal params.yaml keys. `from_dict` rejects unknown and missing keys and
checks types, naming the offending key path (``scales.tiny.data.root``). The JSON
schema in workflow/schemas/ is generated from these dataclasses (`maetok schema`), so
the two cannot drift apart; a test checks the committed copy is current.

Variants are partial overrides of the active scale's block; `merged_tokenizer` and
`merged_generator` build the full config of one variant, which is what a job receives.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SCALES = ("tiny", "paper")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.json"


class ConfigError(ValueError):
    """A params.yaml problem; the message names the key path and the fix."""


def doc(text: str, choices: tuple | None = None, **kw) -> Any:
    """A dataclass field carrying its params.yaml description (and, for strings, allowed values)."""
    return field(metadata={"doc": text, "choices": choices}, **kw)


# --------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["fashion_mnist", "imagefolder"] = doc(
        "Dataset reader: `fashion_mnist` (tiny scale) or `imagefolder` (ImageNet layout, paper scale).")
    root: str | None = doc(
        "Directory holding the data (IDX .gz files or an ImageFolder with train/ and val/). "
        "null: look in $MAETOK_FASHION_MNIST, then /usr/share/datasets/fashion-mnist, then download.")
    download: bool = doc("Allow downloading Fashion-MNIST from `url` when no local copy is found.")
    url: str = doc("Base URL of the Fashion-MNIST IDX files (only used when `download` is true).")
    image_size: int = doc("Side of the square training images in pixels (tiny: 32 after padding; paper: 256).")
    num_classes: int = doc("Number of class labels (Fashion-MNIST 10, ImageNet 1000).")
    hflip: bool = doc("Random horizontal flips during training (paper App. B, Tables 7-9).")

    def check(self, path: str) -> None:
        _positive(self, path, "image_size", "num_classes")


AUX_TARGETS = ("pixel", "hog", "dino", "clip")


# Patch size of each size in the registry `MAETok_models` (maetok/models/tokenizer.py), here so that
# checking params.yaml does not import torch; tests/test_config.py checks that the two agree.
TOKENIZER_PATCH_SIZES = {"MAETok-XS": 8, "MAETok-T": 4, "MAETok-S": 4, "MAETok-B/16": 16, "MAETok-Fixture": 16}


@dataclass(frozen=True)
class TokenizerModelConfig:
    size: str = doc("Size from the registry `MAETok_models` (maetok/models/tokenizer.py): width, depth, heads, "
                    "patch size.", choices=("MAETok-XS", "MAETok-T", "MAETok-S", "MAETok-B/16", "MAETok-Fixture"))
    num_latent_tokens: int = doc("L, the number of learnable 1D latent tokens (paper §4.1: 128).")
    latent_dim: int = doc("H, the channel width of each latent token (paper §4.1: 32).")
    latent_tokens: bool = doc("Learnable latent tokens (true, MAETok) or the image tokens themselves as latents "
                              "(false; Table 6, 13a).")
    bottleneck: Literal["ae", "vae"] = doc("Plain AE (MAETok, paper §3.1) or VAE with a KL term (Table 1a baseline).")
    kl_weight: float = doc("Weight of the VAE KL term (ignored for `ae`).")
    pos_embed: Literal["rope_mixed", "rope_axial", "ape"] = doc(
        "Image-token positions: learnable RoPE-Mixed (official checkpoint), fixed axial 2D RoPE (paper text), "
        "or learned absolute (`ape`, Table 13b).")
    enc_abs_pos: bool = doc("Also add the official code's learned absolute table + cls token in the encoder "
                            "(spec §10.11; the paper text has RoPE only).")
    decoder_block: Literal["modulated", "plain"] = doc(
        "Pixel-decoder blocks: latent-modulated (official code, spec §10.12) or plain ViT blocks (paper text).")
    depth: int | None = doc(
        "Blocks of the encoder and of the pixel decoder, overriding the size's own (null: the size's, MAETok-B/16: "
        "12). Widths and heads stay the size's. For rehearsals of the paper path on small machines "
        "(tests/workflow/rehearsal.yaml); optional.", default=None)

    def check(self, path: str) -> None:
        if self.depth is not None and self.depth <= 0:
            raise ConfigError(f"{_at(path, 'depth')}: must be > 0 or null (the size's own), got {self.depth}")


@dataclass(frozen=True)
class MaskConfig:
    enabled: bool = doc("Mask modeling at the encoder (stage 1). false for the AE/VAE baselines.")
    ratio_low: float = doc("Lower bound of the per-batch mask ratio (paper §4.1: 0.4).")
    ratio_high: float = doc("Upper bound of the per-batch mask ratio (paper §4.1: 0.6).")
    distribution: Literal["truncnorm", "uniform"] = doc(
        "Law of the per-batch ratio: the official truncated normal N(0.6, 0.25) on [low, high] (spec §10.10), "
        "or uniform.")

    def check(self, path: str) -> None:
        if not 0.0 <= self.ratio_low <= self.ratio_high < 1.0:
            raise ConfigError(f"{_at(path, 'ratio_low')}/{_at(path, 'ratio_high')}: need 0 <= low <= high < 1, "
                              f"got low={self.ratio_low}, high={self.ratio_high}")


@dataclass(frozen=True)
class AuxLossConfig:
    pixel: Literal["mse", "cosine"] = doc("Loss of the pixel target (paper Eq. 8: MSE).")
    hog: Literal["mse", "cosine"] = doc("Loss of the HOG target (paper and code: MSE).")
    dino: Literal["mse", "cosine"] = doc("Loss of the DINO-type target (paper: MSE; code: negative cosine).")
    clip: Literal["mse", "cosine"] = doc("Loss of the CLIP-type target (paper: MSE; code: negative cosine).")


@dataclass(frozen=True)
class AuxConfig:
    targets: list[Literal["pixel", "hog", "dino", "clip"]] = doc(
        "Auxiliary shallow decoders, one per target (paper §3.2: hog, dino, clip).")
    depth: Literal["linear", 1, 3, 6, 12] = doc("Blocks per aux decoder, or a single linear layer (Table 1d; "
                                                "paper default 3).")
    weight: float = doc("Weight of each aux loss in Eq. 8 (code: 1.0).")
    loss: AuxLossConfig = doc("Per-target loss type (paper/code disagree, spec §10.1).")

    def check(self, path: str) -> None:
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"{_at(path, 'targets')}: duplicate target in {list(self.targets)}")


@dataclass(frozen=True)
class NetworksConfig:
    kind: Literal["standin", "pretrained"] = doc(
        "`standin`: small networks trained by `train_standin` (tiny scale, STAND-IN for DINOv2/SigLIP/LPIPS/DINO); "
        "`pretrained`: the paper's networks from the local weight files below.")
    dino_model: str = doc("timm name of the DINO-type teacher (paper: DINOv2-L).")
    dino_weights: str = doc("Local weight file of the DINO-type teacher (pretrained only).")
    clip_model: str = doc("timm name of the CLIP-type teacher (paper: SigLIP; code: SigLIP-SO400M/14).")
    clip_weights: str = doc("Local weight file of the CLIP-type teacher (pretrained only).")
    lpips_weights: str = doc("LPIPS-VGG linear heads (pretrained only).")
    vgg_weights: str = doc("torchvision VGG16 ImageNet weights for LPIPS (pretrained only).")
    disc_model: str = doc("timm name of the frozen discriminator backbone (paper: DINOv2-S; code: DINO ViT-S/16).")
    disc_weights: str = doc("Local weight file of the discriminator backbone (pretrained only).")
    # How the teachers see the images: the paper does not say; the defaults are the official code's
    # (docs/deviations.md). Defaults also let tokenizer files written before these keys existed load.
    teacher_input: Literal["official", "native"] = doc(
        "Input geometry of the pretrained teachers: `official` (the official code) resamples each teacher's "
        "patch embedding to the tokenizer's patch size (and its position table to the grid) and runs it at the "
        "tokenizer's image size, e.g. DINOv2-L/14 as /16 at 256 px; `native` keeps the teacher's own patch and "
        "resizes the images so its token grid equals the tokenizer's (224 px for a /14 teacher at 256).",
        default="official")
    clip_norm: Literal["imagenet", "siglip"] = doc(
        "Input normalisation of the CLIP-type teacher: ImageNet mean/std (the official code) or SigLIP's own "
        "mean = std = 0.5. The DINO-type teacher always gets ImageNet mean/std.", default="imagenet")


@dataclass(frozen=True)
class TokenizerLossConfig:
    perceptual_weight: float = doc("lambda_1 of Eq. 6 (paper §4.1: 1.0).")
    perceptual_warmup_steps: int = doc("Linear ramp of the perceptual weight (code: 10K; paper: none -> 0).")
    perceptual_stage1: bool = doc("Perceptual term in stage 1 (paper Eq. 6: yes). false moves it to stage 2 "
                                  "for variants that have one, and to the last `perceptual_last_steps` "
                                  "stage-1 steps for those that do not (tiny budget).")
    perceptual_last_steps: int = doc("With perceptual_stage1 false, a variant without stage 2 has the perceptual "
                                     "term during its last N stage-1 steps (0: never). Unused when "
                                     "perceptual_stage1 is true.")
    disc_weight: float = doc("lambda_2 of Eq. 6, times the adaptive weight (paper §4.1: 0.4). 0 disables the GAN.")
    disc_start: int = doc("Step at which the adversarial loss starts (paper Table 7: 30K).")
    lecam_weight: float = doc("LeCAM regularisation of the discriminator (paper Table 7: 0.001).")
    diffaug: bool = doc("DiffAugment on real and fake images for the discriminator (code only, spec §10.5).")


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = doc("Global batch size (split across processes).")
    lr: float = doc("Base learning rate.")
    lr_batch_scaling: bool = doc("Multiply lr by batch_size / 256 (official tokenizer code, spec §10.8).")
    weight_decay: float = doc("AdamW weight decay (not applied to biases and norms).")
    beta1: float = doc("AdamW beta1.")
    beta2: float = doc("AdamW beta2.")
    schedule: Literal["cosine", "constant"] = doc("Learning-rate schedule after warm-up.")
    warmup_steps: int = doc("Linear warm-up steps.")
    min_lr_ratio: float = doc("Final lr of the cosine schedule as a fraction of the peak (code: 0.1).")
    steps: int = doc("Training steps.")
    ema_decay: float = doc("EMA decay of the weights (code: 0.9999).")
    grad_clip: float = doc("Gradient-norm clip (code: 1.0; 0 disables).")
    ckpt_every: int = doc("Steps between resumable checkpoints.")
    log_every: int = doc("Steps between logged losses.")
    bf16: bool = doc("bf16 autocast (GPU, and CPU where it pays).")
    compile: bool = doc("torch.compile the trained networks (MAETOK_NO_COMPILE=1 turns it off for one run); "
                        "the first compile of a shape takes ~30-60 s on a CPU and is cached on disk.",
                        default=False)  # a default: files written before this key existed still load

    def check(self, path: str) -> None:
        _positive(self, path, "batch_size", "lr", "steps", "ckpt_every", "log_every")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{_at(path, 'ema_decay')}: must be in [0, 1), got {self.ema_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"{_at(path, 'warmup_steps')}: must be >= 0, got {self.warmup_steps}")


@dataclass(frozen=True)
class FinetuneConfig:
    enabled: bool = doc("Run stage 2 (paper §3.3): frozen encoder, aux decoders dropped, decoder fine-tuned.")
    steps: int = doc("Stage-2 steps.")
    mask_start: float = doc("Mask ratio at the start of stage 2 (paper §4.1: 0.6).")
    anneal_steps: int = doc("Steps over which the mask ratio falls linearly to 0, reached at the last of them "
                            "(paper §4.1: 50K).")
    lr: float = doc("Stage-2 base learning rate.")
    compile: bool = doc("torch.compile the decoder in stage 2 (as optim.compile in stage 1).", default=False)
    disc_start: int = doc(
        "Stage-2 step from which the adversarial term and the discriminator updates are on (stage 2 continues "
        "stage 1's discriminator and its optimiser state). 0: from the first step, as paper §3.3 (Eq. 6, the same "
        "loss as stage 1) reads; loss.disc_start counts stage-1 steps only.", default=0)

    def check(self, path: str) -> None:
        _positive(self, path, "steps", "lr")
        if self.anneal_steps < 0:
            raise ConfigError(f"{_at(path, 'anneal_steps')}: must be >= 0, got {self.anneal_steps}")
        if self.disc_start < 0:
            raise ConfigError(f"{_at(path, 'disc_start')}: must be >= 0, got {self.disc_start}")
        if not 0.0 <= self.mask_start < 1.0:
            raise ConfigError(f"{_at(path, 'mask_start')}: must be in [0, 1), got {self.mask_start}")


@dataclass(frozen=True)
class TokenizerConfig:
    model: TokenizerModelConfig = doc("Architecture (paper §3, Table 7).")
    mask: MaskConfig = doc("Mask modeling (paper §3.2).")
    aux: AuxConfig = doc("Auxiliary shallow decoders (paper §3.2, Eq. 8).")
    networks: NetworksConfig = doc("Teachers, perceptual network and discriminator backbone.")
    loss: TokenizerLossConfig = doc("Eq. 6 loss weights.")
    optim: OptimConfig = doc("Stage-1 optimisation (paper Table 7).")
    finetune: FinetuneConfig = doc("Stage 2: pixel-decoder fine-tuning (paper §3.3).")
    mixed_resolution: list[int] = doc(
        "Image sizes drawn per training step, each batch resized to one (paper App. C.4, Table 13b: "
        "mixed-resolution training); [] trains at data.image_size only. eval_reconstruction also reports "
        "the largest size (`recon.hires`). Optional: tokenizer files written before it existed read as [].",
        default_factory=tuple)

    def check(self, path: str) -> None:
        bad = [s for s in self.mixed_resolution if s <= 0]
        if bad:
            raise ConfigError(f"{_at(path, 'mixed_resolution')}: image sizes must be positive, got {bad}")


@dataclass(frozen=True)
class TransportConfig:
    path: Literal["linear", "cosine"] = doc(
        "Interpolant: linear x_t = (1-t) x + t eps (official, spec §5.2) or cosine.")
    time_sampling: Literal["uniform", "logit_normal"] = doc(
        "Training time distribution (code default uniform; the official README uses logit-normal, spec §5.2).")
    time_mean: float = doc("Mean of the logit-normal time distribution.")
    time_std: float = doc("Std of the logit-normal time distribution.")
    cos_weight: float = doc("Weight of LightningDiT's cosine velocity-direction loss (paper Table 9; 0 for SiT).")
    conditional: bool = doc("Class-conditional (true) or unconditional generation (Table 5).")
    class_dropout: float = doc("Label dropout for classifier-free guidance (SiT: 0.1); in [0, 1), 0 trains no "
                               "unconditional model, so `cfg` sampling has nothing to guide with.")

    def check(self, path: str) -> None:
        if not 0.0 <= self.class_dropout < 1.0:
            raise ConfigError(f"{_at(path, 'class_dropout')}: must be in [0, 1) (0.1 for classifier-free guidance, "
                              f"as SiT), got {self.class_dropout}")


@dataclass(frozen=True)
class GeneratorConfig:
    size: str = doc("Size from the registry `SiT_models` (maetok/models/sit.py).",
                    choices=("SiT-T/1", "SiT-S/1", "SiT-B/1", "SiT-L/1", "SiT-XL/1", "SiT-Fixture/1",
                             "LightningDiT-T/1", "LightningDiT-B/1", "LightningDiT-L/1", "LightningDiT-XL/1"))
    transport: TransportConfig = doc("Flow-matching transport (paper §4.1, App. B Tables 8-9).")
    optim: OptimConfig = doc("Generator optimisation (paper App. B Tables 8-9).")
    latent_norm: Literal["scalar", "channel"] = doc(
        "Latent normalisation before diffusion: one global mean/std (official, spec §5.3) or per channel.")
    eval_steps: list[int] = doc("Training steps whose EMA weights are kept for gFID-vs-steps (Fig. 5b); "
                                "the last step is always kept.")
    depth: int | None = doc(
        "Transformer blocks, overriding the size's own (null: the size's, SiT-L/1: 24). Width and heads stay the "
        "size's. For rehearsals of the paper path on small machines (tests/workflow/rehearsal.yaml); optional.",
        default=None)
    preview_steps: int = doc("Euler ODE steps of the sample grid drawn at the end of training (`preview.png`; "
                             "the official script: 50).", default=50)

    def check(self, path: str) -> None:
        if self.depth is not None and self.depth <= 0:
            raise ConfigError(f"{_at(path, 'depth')}: must be > 0 or null (the size's own), got {self.depth}")
        _positive(self, path, "preview_steps")
        if any(s <= 0 or s > self.optim.steps for s in self.eval_steps):
            raise ConfigError(f"{_at(path, 'eval_steps')}: every step must be in [1, optim.steps={self.optim.steps}]")


@dataclass(frozen=True)
class SamplingConfig:
    sampler: Literal["ode", "sde"] = doc("Euler ODE or Euler-Maruyama SDE (paper Tables 8-9).")
    num_steps: int = doc("Sampling steps (paper: 250).")
    cfg_scale: float = doc("Classifier-free guidance scale for the `w/ CFG` columns (paper §4.1: 1.9 at 256).")
    cfg_interval_low: float = doc("Guidance applies for t in [low, high]; t = 0 is data (paper: [0, 0.75]).")
    cfg_interval_high: float = doc("Upper end of the guidance interval in t.")
    num_samples: int = doc("Samples per evaluation (ADM protocol: 50,000).")
    batch_size: int = doc("Samples per forward batch.")
    sde_t_last: float = doc("Last SDE time before the final deterministic step (official: 0.04).")
    bf16: bool = doc("bf16 autocast of the generator while sampling (GPU; on CPU it is ~1.6x faster for SiT-T). "
                     "The sampler's state and step arithmetic stay in float64.")

    def check(self, path: str) -> None:
        _positive(self, path, "num_steps", "num_samples", "batch_size")
        if not 0.0 <= self.cfg_interval_low <= self.cfg_interval_high <= 1.0:
            raise ConfigError(f"{_at(path, 'cfg_interval_low')}/{_at(path, 'cfg_interval_high')}: "
                              "need 0 <= low <= high <= 1")


@dataclass(frozen=True)
class EvaluationConfig:
    feature_network: Literal["standin", "inception"] = doc(
        "FID/IS/precision/recall features: the tiny evaluator classifier (STAND-IN) or torch-fidelity's Inception "
        "(+ VGG16 for precision/recall).")
    torch_home: str = doc("Directory holding hub/checkpoints/ with the Inception and VGG16 weights (paper scale).")
    num_recon: int = doc("Validation images used for rFID/PSNR/SSIM (paper: ImageNet val 50k).")
    batch_size: int = doc("Images per batch during evaluation.")
    ood_dataset: Literal["digits", "coco"] = doc(
        "Out-of-domain reconstruction set (paper Table 4: COCO val; tiny STAND-IN: scikit-learn digits).")
    ood_root: str = doc("Directory of the out-of-domain images (coco only).")


@dataclass(frozen=True)
class StandinsConfig:
    teacher_steps: int = doc("Training steps of each stand-in teacher (tiny only).")
    evaluator_steps: int = doc("Training steps of the stand-in FID evaluator (tiny only).")
    batch_size: int = doc("Batch size of stand-in training.")
    lr: float = doc("Learning rate of stand-in training.")
    bf16: bool = doc("bf16 autocast for stand-in training (CNNs: ~3x faster on CPUs with AMX/AVX512-BF16).")

    def check(self, path: str) -> None:
        _positive(self, path, "batch_size", "lr")
        for name in ("teacher_steps", "evaluator_steps"):  # 0 at paper scale, where no stand-in is trained
            if getattr(self, name) < 0:
                raise ConfigError(f"{_at(path, name)}: must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class HiresConfig:
    image_size: int = doc(
        "Image side of the tokenizer variants with `resolution: hires` and of everything built on them "
        "(paper: 512, Tables 3, 4, 11). Rule prepare_hires derives the data from the prepared base data: the "
        "same file lists center-cropped at this size (imagefolder), or the base images upsampled (bicubic) "
        "to it (fashion_mnist: a STAND-IN for a higher-resolution dataset).")

    def check(self, path: str) -> None:
        _positive(self, path, "image_size")


# A point of the CFG sweep (Table 12) as a guidance name: "cfg<scale>_<low>-<high>", e.g. "cfg1.9_0-0.75".
SWEEP_GUIDANCE = re.compile(r"cfg(?P<scale>\d+(?:\.\d+)?)_(?P<low>\d+(?:\.\d+)?)-(?P<high>\d+(?:\.\d+)?)")


def sweep_point(guidance: str) -> tuple[float, float, float] | None:
    """(scale, low, high) of a CFG-sweep guidance name such as "cfg1.9_0-0.75"; None for any other name."""
    m = SWEEP_GUIDANCE.fullmatch(guidance)
    return (float(m["scale"]), float(m["low"]), float(m["high"])) if m else None


@dataclass(frozen=True)
class CfgSweepConfig:
    num_samples: int = doc("Samples per point of the CFG scale/interval sweep (paper Table 12 caption: 10,000); "
                           "the sweep's points are the rows of Table 12, sampled as `sampling` otherwise says.")
    generator_step: int | None = doc(
        "Training step of the generator EMA the sweep samples (Table 12 caption: SiT-XL after 2M of its 4M steps); "
        "must be one of the generator's `eval_steps`. null: the final EMA.")

    def check(self, path: str) -> None:
        _positive(self, path, "num_samples")
        if self.generator_step is not None and self.generator_step <= 0:
            raise ConfigError(f"{_at(path, 'generator_step')}: must be > 0 (or null for the final EMA)")


@dataclass(frozen=True)
class AnalysisConfig:
    gmm_components: list[int] = doc("Numbers of GMM components (paper App. B.3: 50, 100, 200).")
    gmm_covariance: Literal["diag", "full"] = doc("GMM covariance type.")
    gmm_pca_dim: int = doc("PCA dimension shared by all tokenizers in a comparison (App. B.3: >= 90% variance).")
    gmm_max_samples: int = doc("Latents used to fit the GMM (subsampled, class-balanced).")
    gmm_backend: Literal["sklearn", "torch"] = doc("scikit-learn (small data) or batched torch EM (GPU).")
    probe_epochs: int = doc("Linear-probe epochs over the cached train latents.")
    probe_lr: float = doc("Linear-probe learning rate.")
    umap_per_class: int = doc("Points per class in the UMAP plots (Fig. 4, 9).")


@dataclass(frozen=True)
class NodesConfig:
    tokenizer: int = doc("Slurm nodes per tokenizer training job (rules train_tokenizer, finetune_decoder): "
                         "1 runs `torchrun --standalone` on one node; N > 1 one torchrun per node (README: "
                         "Running on a cluster).")
    generator: int = doc("Slurm nodes per generator training job (rule train_generator), as `tokenizer`.")

    def check(self, path: str) -> None:
        _positive(self, path, "tokenizer", "generator")


SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ReleasedWeightsConfig:
    """The `weights` key of a tokenizer or generator variant: a released file of the authors that the
    workflow converts (`maetok import-official`, rules import_tokenizer / import_generator) instead of
    training the variant. Used at paper scale only; docs/official_weights.md."""
    path: str = doc("The released file in the official code's layout (.safetensors, .bin, .pt, .pth), relative to "
                    "the repository root. Nothing downloads it: docs/official_weights.md gives the commands.")
    sha256: str | None = doc("Expected sha256 of `path` (64 hex digits), checked before the import; null: not "
                             "checked.", default=None)
    repo: str | None = doc("Hugging Face repository of the file (e.g. MAETok/maetok-b-128): the error for a missing "
                           "file prints its download command. null: none.", default=None)
    config: str | None = doc("Tokenizers: the config.json released with the weights, checked against them; its "
                             "vq_mean / vq_std (the latent normalisation of the released SiT) are recorded for the "
                             "generator import. null: none.", default=None)
    tokenizer: str | None = doc("Generators (required): the tokenizer variant on whose latents the released "
                                "generator was trained; it is imported, sampled and evaluated with that tokenizer "
                                "only.", default=None)
    latent_mean: float | None = doc("Generators: vq_mean of the official latent normalisation (z - mean) / std; "
                                    "null: the value recorded from the tokenizer's `config`.", default=None)
    latent_std: float | None = doc("Generators: vq_std, with `latent_mean`; null: the tokenizer's.", default=None)

    def check(self, path: str) -> None:
        if self.sha256 is not None and not SHA256_HEX.fullmatch(self.sha256.lower()):
            raise ConfigError(f"{_at(path, 'sha256')}: {self.sha256!r} is not a sha256 (64 hex digits): write the "
                              f"output of `sha256sum {self.path}`, or null")
        if (self.latent_mean is None) != (self.latent_std is None):
            raise ConfigError(f"{_at(path, 'latent_mean')}/{_at(path, 'latent_std')}: give both or neither")
        if self.latent_std is not None and self.latent_std <= 0:
            raise ConfigError(f"{_at(path, 'latent_std')}: must be > 0, got {self.latent_std}")


@dataclass(frozen=True)
class ScaleConfig:
    data: DataConfig = doc("Dataset settings for this scale.")
    hires: HiresConfig = doc("The higher-resolution data of `resolution: hires` tokenizers (512x512 tables).")
    tokenizer: TokenizerConfig = doc("Base tokenizer settings; variants override them.")
    generator: GeneratorConfig = doc("Base generator settings; variants override them.")
    sampling: SamplingConfig = doc("Sampling for generation metrics.")
    cfg_sweep: CfgSweepConfig = doc("The CFG scale/interval sweep of Table 12.")
    evaluation: EvaluationConfig = doc("Reconstruction and generation metrics.")
    standins: StandinsConfig = doc("Stand-in networks trained at tiny scale (ignored at paper scale).")
    analysis: AnalysisConfig = doc("Latent-space analyses: GMM, linear probe, UMAP.")
    nodes: NodesConfig = doc("Nodes per training job, each with the job's GPUs. A resource of the rules, never "
                             "part of a job's config: changing it reruns no training job, and one resumes its "
                             "checkpoints on another number of nodes.")

    def check(self, path: str) -> None:
        if self.hires.image_size <= self.data.image_size:
            raise ConfigError(f"{_at(path, 'hires.image_size')}: {self.hires.image_size} must be larger than "
                              f"{_at(path, 'data.image_size')} = {self.data.image_size}")
        classes = self.data.num_classes
        for key, n in (("sampling.num_samples", self.sampling.num_samples),
                       ("cfg_sweep.num_samples", self.cfg_sweep.num_samples)):
            if n % classes:
                raise ConfigError(f"{_at(path, key)}: {n} is not divisible by "
                                  f"{_at(path, 'data.num_classes')} = {classes}, so the class-balanced labels of the "
                                  f"samples cannot be balanced: use a multiple of {classes}")


@dataclass(frozen=True)
class Params:
    scale: Literal["tiny", "paper"] = doc("Active scale: which block of `scales` the pipeline runs.")
    seed: int = doc("Global seed; stages derive theirs as seed * world_size + rank.")
    scales: dict[str, ScaleConfig] = doc("Base settings per scale; must define exactly `tiny` and `paper`.")
    tokenizer_variants: dict[str, dict] = doc(
        "Named tokenizers: partial overrides of `scales.<scale>.tokenizer` (+ `by_scale.<scale>` overrides, "
        "a `description`, `resolution`: `base` (data.image_size, the default) or `hires` (hires.image_size), "
        "and `weights`: a released file imported instead of training, at paper scale).")
    generator_variants: dict[str, dict] = doc(
        "Named generators: partial overrides of `scales.<scale>.generator` (+ `by_scale`, `description`, "
        "`sampling`: partial overrides of `scales.<scale>.sampling` for this generator's samples, and "
        "`weights`: a released file imported instead of training, at paper scale).")

    def check(self, path: str) -> None:
        if set(self.scales) != set(SCALES):
            raise ConfigError(f"{_at(path, 'scales')}: must define exactly {list(SCALES)}, "
                              f"found {sorted(self.scales)}")
        for kind in ("tokenizer", "generator"):
            for name in getattr(self, f"{kind}_variants"):
                self.released(kind, name)
        for scale in SCALES:
            for name in self.tokenizer_variants:
                self._check_patch_grid(name, scale)
            for name in self.generator_variants:
                self.generator(name, scale)
                n, classes = self.sampling(name, scale).num_samples, self.scales[scale].data.num_classes
                if n % classes:
                    raise ConfigError(f"generator_variants.{name}.sampling.num_samples: {n} is not divisible by "
                                      f"scales.{scale}.data.num_classes = {classes}: use a multiple of {classes}")

    def _check_patch_grid(self, tokenizer: str, scale: str) -> None:
        """Every image size tokenizer variant `tokenizer` trains on at `scale` splits into whole patches
        (else its first job would stop on it)."""
        cfg, data = self.tokenizer(tokenizer, scale), self.tokenizer_data(tokenizer, scale)
        patch = TOKENIZER_PATCH_SIZES.get(cfg.model.size)
        if patch is None:
            return
        raw = self.tokenizer_variants[tokenizer]
        mixed = (f"tokenizer_variants.{tokenizer}.by_scale.{scale}.mixed_resolution"
                 if "mixed_resolution" in ((raw.get("by_scale") or {}).get(scale) or {})
                 else f"tokenizer_variants.{tokenizer}.mixed_resolution" if "mixed_resolution" in raw
                 else f"scales.{scale}.tokenizer.mixed_resolution")
        key = f"scales.{scale}.{'data' if self.resolution(tokenizer) == 'base' else 'hires'}.image_size"
        sizes = [(key, data.image_size)] + [(mixed, s) for s in cfg.mixed_resolution]
        for where, size in sizes:
            if size % patch:
                raise ConfigError(f"{where}: {size} px is not divisible by the patch size {patch} of "
                                  f"{cfg.model.size} (the model.size of tokenizer variant {tokenizer!r} at scale "
                                  f"{scale}): use a multiple of {patch}, or a model.size whose patch divides {size}")

    def generator(self, variant: str, scale: str | None = None) -> GeneratorConfig:
        """The merged config of generator `variant` at `scale` (default: the active one)."""
        return _merge_variant(self, "generator", self.generator_variants, GeneratorConfig, variant, scale)

    def sampling(self, generator: str, scale: str | None = None) -> SamplingConfig:
        """How generator variant `generator` is sampled at `scale`: `scales.<scale>.sampling` with the
        variant's `sampling` overrides (e.g. LightningDiT's own CFG scale, paper App. C.2)."""
        scale = scale or self.scale
        raw = self.generator_variants.get(generator)
        if raw is None:
            raise ConfigError(f"unknown generator variant {generator!r}; defined in params.yaml "
                              f"`generator_variants`: {', '.join(self.generator_variants)}")
        by_scale = (raw.get("by_scale") or {}).get(scale) or {}
        override = deep_merge(raw.get("sampling") or {}, by_scale.get("sampling") or {})
        if not override:
            return self.scales[scale].sampling
        merged = deep_merge(to_dict(self.scales[scale].sampling), override)
        return from_dict(SamplingConfig, merged, f"generator_variants.{generator}.sampling")

    def job_sampling(self, generator: str, guidance: str, scale: str | None = None) -> SamplingConfig:
        """The sampling config of one sampling job, holding only what its samples depend on, so that
        editing a setting reruns exactly the jobs it changes: `nocfg` keeps the base CFG fields (it
        ignores them); a Table 12 point "cfg<scale>_<low>-<high>" gets its own scale and interval and
        `cfg_sweep.num_samples` samples; `cfg` is the generator's `sampling` (see `sampling`)."""
        s, base = self.sampling(generator, scale), self.scales[scale or self.scale]
        if guidance == "nocfg":
            return dataclasses.replace(s, cfg_scale=base.sampling.cfg_scale,
                                       cfg_interval_low=base.sampling.cfg_interval_low,
                                       cfg_interval_high=base.sampling.cfg_interval_high)
        point = sweep_point(guidance)
        if point:
            scale_, low, high = point
            return dataclasses.replace(s, cfg_scale=scale_, cfg_interval_low=low, cfg_interval_high=high,
                                       num_samples=base.cfg_sweep.num_samples)
        return s

    def tokenizer(self, variant: str, scale: str | None = None) -> TokenizerConfig:
        """The merged config of tokenizer `variant` at `scale` (default: the active one)."""
        return _merge_variant(self, "tokenizer", self.tokenizer_variants, TokenizerConfig, variant, scale)

    def released(self, kind: str, variant: str) -> ReleasedWeightsConfig | None:
        """The released weights that `kind` ("tokenizer" or "generator") variant `variant` imports instead of
        being trained (its `weights` key), or None for a trained variant. The workflow uses them at paper
        scale only (docs/official_weights.md)."""
        variants = getattr(self, f"{kind}_variants")
        if variant not in variants:
            raise ConfigError(f"unknown {kind} variant {variant!r}; defined in params.yaml `{kind}_variants`: "
                              f"{', '.join(variants)}")
        raw = variants[variant].get("weights")
        if raw is None:
            return None
        where = f"{kind}_variants.{variant}.weights"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping (path, sha256, ...), got {type(raw).__name__} {raw!r}")
        w = from_dict(ReleasedWeightsConfig, raw, where)
        if kind == "tokenizer":
            extra = [k for k in ("tokenizer", "latent_mean", "latent_std") if getattr(w, k) is not None]
            if extra:
                raise ConfigError(f"{where}.{extra[0]}: only a generator's weights name a tokenizer or a latent "
                                  "normalisation; remove it")
        else:
            if w.config is not None:
                raise ConfigError(f"{where}.config: the config.json is the tokenizer's (tokenizer_variants.<name>."
                                  "weights.config), where the generator import reads its vq_mean / vq_std; remove it")
            if w.tokenizer is None:
                raise ConfigError(f"{where}.tokenizer: missing: name the tokenizer variant whose latents the released "
                                  "generator was trained on (e.g. maetok_release)")
            if w.tokenizer not in self.tokenizer_variants:
                raise ConfigError(f"{where}.tokenizer: {w.tokenizer!r} is not a tokenizer variant; defined in "
                                  f"params.yaml `tokenizer_variants`: {', '.join(self.tokenizer_variants)}")
        return w

    def resolution(self, tokenizer: str) -> str:
        """`base` or `hires`: which data tokenizer variant `tokenizer` trains and is evaluated on."""
        if tokenizer not in self.tokenizer_variants:
            raise ConfigError(f"unknown tokenizer variant {tokenizer!r}; defined in params.yaml "
                              f"`tokenizer_variants`: {', '.join(self.tokenizer_variants)}")
        res = self.tokenizer_variants[tokenizer].get("resolution", "base")
        if res not in RESOLUTIONS:
            raise ConfigError(f"tokenizer_variants.{tokenizer}.resolution: {res!r} is not one of {list(RESOLUTIONS)}")
        return res

    def tokenizer_data(self, tokenizer: str, scale: str | None = None) -> DataConfig:
        """The data settings of tokenizer variant `tokenizer`: `data`, at `hires.image_size` for `hires`."""
        s = self.scales[scale or self.scale]
        if self.resolution(tokenizer) == "base":
            return s.data
        return dataclasses.replace(s.data, image_size=s.hires.image_size)

    def same_runs(self, kind: str, scale: str | None = None) -> dict[str, str]:
        """{variant: the first variant (params.yaml order) that is the same run at `scale`} of the
        `kind` "tokenizer" (same merged config and data) or "generator" (same config and sampling); a variant
        that imports released weights is the same run only as one importing the same file the same way.
        Variants that differ only at another scale merge here: at tiny, maetok_main is maetok (it
        trains longer only at paper scale), so the workflow trains one tokenizer for both."""
        if kind == "tokenizer":
            names = list(self.tokenizer_variants)
            keys = [(self.tokenizer(v, scale), self.tokenizer_data(v, scale), self.released(kind, v)) for v in names]
        elif kind == "generator":
            names = list(self.generator_variants)
            keys = [(self.generator(v, scale), self.sampling(v, scale), self.released(kind, v)) for v in names]
        else:
            raise ValueError(f"kind must be 'tokenizer' or 'generator', not {kind!r}")
        return {v: names[keys.index(k)] for v, k in zip(names, keys, strict=True)}

    @property
    def active(self) -> ScaleConfig:
        return self.scales[self.scale]


VARIANT_EXTRA_KEYS = ("description", "by_scale")
# Keys of a variant that are not part of its block's config: generator variants carry their
# sampling overrides (Params.sampling), which must not change the generator's training config.
VARIANT_SIDE_KEYS = {"tokenizer": ("resolution", "weights"), "generator": ("sampling", "weights")}
RESOLUTIONS = ("base", "hires")


def _merge_variant(params: Params, block: str, variants: dict, cls: type, name: str, scale: str | None):
    scale = scale or params.scale
    if name not in variants:
        raise ConfigError(f"unknown {block} variant {name!r}; defined in params.yaml `{block}_variants`: "
                          f"{', '.join(variants)}")
    side = VARIANT_SIDE_KEYS[block]
    description = variants[name].get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{block}_variants.{name}.description: expected a string, got {type(description).__name__} "
                          f"{description!r}: quote it (description: \"...\")")
    override = {k: v for k, v in variants[name].items() if k not in VARIANT_EXTRA_KEYS + side}
    by_scale = variants[name].get("by_scale") or {}
    if not isinstance(by_scale, dict) or set(by_scale) - set(SCALES):
        raise ConfigError(f"{block}_variants.{name}.by_scale: keys must be among {list(SCALES)}")
    base = to_dict(getattr(params.scales[scale], block))
    for s_name, overrides in by_scale.items():
        if block == "tokenizer" and "resolution" in (overrides or {}):
            raise ConfigError(f"{block}_variants.{name}.by_scale.{s_name}.resolution: `resolution` is set per "
                              "variant (a variant's data), not per scale; move it up to the variant")
        if "weights" in (overrides or {}):
            raise ConfigError(f"{block}_variants.{name}.by_scale.{s_name}.weights: `weights` is set per variant "
                              "(the workflow imports released weights at paper scale only); move it up to the variant")
    at_scale = {k: v for k, v in (by_scale.get(scale) or {}).items() if k not in side}
    merged = deep_merge(deep_merge(base, override), at_scale)
    return from_dict(cls, merged, f"{block}_variants.{name}" + (f" (at scale {scale})" if by_scale else ""))


# --------------------------------------------------------------------------- loading
def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _positive(obj: Any, path: str, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{_at(path, name)}: must be > 0, got {getattr(obj, name)!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the type annotation `tp`; return the converted value."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, path)
    if origin is Literal:
        if value not in args or (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _convert(arg, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _convert(args[1], v, _at(path, str(k))) for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (write floats as 1.0e-4: YAML 1.1 reads 1e-4 as a string)" if isinstance(value, str) else ""
            raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {value!r}{hint}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown/missing keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {_at(path, unknown[0])!r}; valid keys here: {', '.join(names)}")
    fields = dataclasses.fields(cls)
    optional = {f.name for f in fields if f.default is not MISSING or f.default_factory is not MISSING}
    missing = [n for n in names if n not in data and n not in optional]
    if missing:
        raise ConfigError(f"missing key {_at(path, missing[0])!r} "
                          f"({fields[names.index(missing[0])].metadata.get('doc', '')})")
    obj = cls(**{n: _convert(hints[n], data[n], _at(path, n)) for n in names if n in data})
    for f in dataclasses.fields(cls):
        if f.metadata.get("choices") and getattr(obj, f.name) not in f.metadata["choices"]:
            choices = list(f.metadata["choices"])
            raise ConfigError(f"{_at(path, f.name)}: {getattr(obj, f.name)!r} is not one of {choices}")
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Inverse of from_dict: plain JSON-able dicts/lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict update; returns a new dict (lists are replaced, not merged)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _duplicate_keys(node: yaml.Node, path: str = ""):
    """(key path, first line, repeated line) of every key written twice in one mapping of the tree."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                yield _at(path, key), seen[key], line
            seen.setdefault(key, line)
            yield from _duplicate_keys(value, _at(path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]")


def read_yaml(path: str | Path) -> dict:
    """A params file as a dict. Unlike `yaml.safe_load` (and Snakemake's loader), it refuses a key
    written twice in one mapping, which would otherwise keep the last value silently, and a syntax
    error names the line and column."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found (run from the repository root, or pass --params)")
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        for key, first, again in _duplicate_keys(node) if node is not None else ():
            raise ConfigError(f"{path}: duplicate key {key!r} on lines {first} and {again}: keep one of them "
                              "(YAML would silently use the last)")
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark, context = e.problem_mark or e.context_mark, ""
        if e.context and e.context_mark and e.context_mark is not mark:
            context = f" ({e.context} started at line {e.context_mark.line + 1}, column {e.context_mark.column + 1})"
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: YAML syntax error{at}: {e.problem or e.context}{context}: fix the file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())}): fix the file") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def check_yaml_files(paths) -> None:
    """Read each params file (params.yaml, --configfile overlays) as `read_yaml` does, so that Snakemake
    stops on a duplicate key or a syntax error with its line before its own loader reads the file."""
    for path in dict.fromkeys(str(p) for p in paths):
        read_yaml(path)


def load_params(source: str | Path | dict = DEFAULT_PARAMS, overrides: dict | None = None) -> Params:
    """Load and check params (a path or an already-parsed dict, e.g. Snakemake's `config`)."""
    data = read_yaml(source) if not isinstance(source, dict) else copy.deepcopy(source)
    if overrides:
        data = deep_merge(data, overrides)
    return from_dict(Params, data)


# --------------------------------------------------------------------------- schema
def _schema_for(tp: Any, partial: bool = False) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        props = {}
        for f in dataclasses.fields(tp):
            props[f.name] = {"description": f.metadata["doc"], **_schema_for(hints[f.name], partial)}
            if f.metadata.get("choices"):
                props[f.name]["enum"] = list(f.metadata["choices"])
        out = {"type": "object", "additionalProperties": False, "properties": props}
        if not partial:
            out["required"] = list(props)
        return out
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_for(a, partial) for a in args]}
    if origin is list:
        return {"type": "array", "items": _schema_for(args[0], partial)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_for(args[1], partial)}
    return {"type": {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
                     dict: "object"}[tp]}


def json_schema() -> dict:
    """The JSON schema (draft 2020-12) of params.yaml, derived from the dataclasses."""
    schema = _schema_for(Params)
    scale_cfg = schema["properties"]["scales"]
    scale_cfg.pop("additionalProperties")
    scale_cfg["properties"] = {s: _schema_for(ScaleConfig) for s in SCALES}
    for s in SCALES:
        scale_cfg["properties"][s]["description"] = f"Base settings of the `{s}` scale."
    scale_cfg["additionalProperties"] = False
    scale_cfg["required"] = list(SCALES)
    for block, cls in (("tokenizer", TokenizerConfig), ("generator", GeneratorConfig)):
        variant = _schema_for(cls, partial=True)
        variant["properties"]["description"] = {"description": "What this variant is and which tables use it.",
                                                "type": "string"}
        at_scale = _schema_for(cls, partial=True)
        if block == "tokenizer":
            variant["properties"]["resolution"] = {
                "description": "`base` (data.image_size) or `hires` (hires.image_size, e.g. 512 for Tables 3, 4, 11).",
                "enum": list(RESOLUTIONS)}
        if block == "generator":
            sampling = {"description": "Overrides of `scales.<scale>.sampling` for this generator's samples.",
                        **_schema_for(SamplingConfig, partial=True)}
            variant["properties"]["sampling"] = sampling
            at_scale["properties"]["sampling"] = sampling
        weights = _schema_for(ReleasedWeightsConfig)
        weights["required"] = [f.name for f in dataclasses.fields(ReleasedWeightsConfig)
                               if f.default is MISSING and f.default_factory is MISSING]
        variant["properties"]["weights"] = {
            "description": "A released file imported instead of training this variant, at paper scale "
                           "(docs/official_weights.md).", **weights}
        variant["properties"]["by_scale"] = {
            "description": "Overrides that apply only at one scale.", "type": "object", "additionalProperties": False,
            "properties": {s: {"description": f"Overrides at `{s}`.", **at_scale} for s in SCALES}}
        schema["properties"][f"{block}_variants"]["additionalProperties"] = variant
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "MAETok reproduction params.yaml", **schema}


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_schema(), indent=2) + "\n")
    return path
