"""The params.yaml blocks of each stage as frozen dataclasses (data, tokenizer, generator, sampling,
evaluation, analyses, ...), up to `ScaleConfig`, the settings of one scale.

Field names equal params.yaml keys; each field carries its description (`doc`), which the JSON
schema repeats. Choices that name a model size or a model option come from maetok/models/choices.py,
so they are the registries' own (tests/test_config.py). `check` methods add the checks a type
cannot express; maetok/config.py holds the top level (`Params`) and the variants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from maetok.config_base import ConfigError, check_positive, doc, key_path
from maetok.models.choices import (
    AUX_DEPTHS,
    AUX_LOSSES,
    AUX_TARGETS,
    BOTTLENECKS,
    DECODER_BLOCKS,
    GENERATOR_SIZES,
    MASK_RATIO_DISTS,
    POS_EMBEDS,
    TOKENIZER_SIZES,
)


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
        check_positive(self, path, "image_size", "num_classes")


@dataclass(frozen=True)
class TokenizerModelConfig:
    size: str = doc("Size from the registry `MAETok_models` (maetok/models/tokenizer.py): width, depth, heads, "
                    "patch size.", choices=TOKENIZER_SIZES)
    num_latent_tokens: int = doc("L, the number of learnable 1D latent tokens (paper §4.1: 128).")
    latent_dim: int = doc("H, the channel width of each latent token (paper §4.1: 32).")
    latent_tokens: bool = doc("Learnable latent tokens (true, MAETok) or the image tokens themselves as latents "
                              "(false; Table 6, 13a).")
    bottleneck: Literal[*BOTTLENECKS] = doc("Plain AE (MAETok, paper §3.1) or VAE with a KL term (Table 1a baseline).")
    kl_weight: float = doc("Weight of the VAE KL term (ignored for `ae`).")
    pos_embed: Literal[*POS_EMBEDS] = doc(
        "Image-token positions: learnable RoPE-Mixed (official checkpoint), fixed axial 2D RoPE (paper text), "
        "or learned absolute (`ape`, Table 13b).")
    enc_abs_pos: bool = doc("Also add the official code's learned absolute table + cls token in the encoder "
                            "(the paper text has RoPE only; docs/deviations.md).")
    decoder_block: Literal[*DECODER_BLOCKS] = doc(
        "Pixel-decoder blocks: latent-modulated (official code) or plain ViT blocks (paper text; docs/deviations.md).")
    depth: int | None = doc(
        "Blocks of the encoder and of the pixel decoder, overriding the size's own (null: the size's, MAETok-B/16: "
        "12). Widths and heads stay the size's. For rehearsals of the paper path on small machines "
        "(tests/workflow/rehearsal.yaml); optional.", default=None)

    def check(self, path: str) -> None:
        if self.depth is not None and self.depth <= 0:
            raise ConfigError(f"{key_path(path, 'depth')}: must be > 0 or null (the size's own), got {self.depth}")


@dataclass(frozen=True)
class MaskConfig:
    enabled: bool = doc("Mask modeling at the encoder (stage 1). false for the AE/VAE baselines.")
    ratio_low: float = doc("Lower bound of the per-batch mask ratio (paper §4.1: 0.4).")
    ratio_high: float = doc("Upper bound of the per-batch mask ratio (paper §4.1: 0.6).")
    distribution: Literal[*MASK_RATIO_DISTS] = doc(
        "Law of the per-batch ratio: the official truncated normal N(0.6, 0.25) on [low, high], or uniform "
        "(docs/deviations.md).")

    def check(self, path: str) -> None:
        if not 0.0 <= self.ratio_low <= self.ratio_high < 1.0:
            raise ConfigError(f"{key_path(path, 'ratio_low')}/{key_path(path, 'ratio_high')}: need "
                              f"0 <= low <= high < 1, got low={self.ratio_low}, high={self.ratio_high}")


@dataclass(frozen=True)
class AuxLossConfig:
    pixel: Literal[*AUX_LOSSES] = doc("Loss of the pixel target (paper Eq. 8: MSE).")
    hog: Literal[*AUX_LOSSES] = doc("Loss of the HOG target (paper and code: MSE).")
    dino: Literal[*AUX_LOSSES] = doc("Loss of the DINO-type target (paper: MSE; code: negative cosine).")
    clip: Literal[*AUX_LOSSES] = doc("Loss of the CLIP-type target (paper: MSE; code: negative cosine).")


@dataclass(frozen=True)
class AuxConfig:
    targets: list[Literal[*AUX_TARGETS]] = doc(
        "Auxiliary shallow decoders, one per target (paper §3.2: hog, dino, clip).")
    depth: Literal[*AUX_DEPTHS] = doc("Blocks per aux decoder, or a single linear layer (Table 1d; "
                                                "paper default 3).")
    weight: float = doc("Weight of each aux loss in Eq. 8 (code: 1.0).")
    loss: AuxLossConfig = doc("Per-target loss type (paper and code disagree; docs/deviations.md).")

    def check(self, path: str) -> None:
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"{key_path(path, 'targets')}: duplicate target in {list(self.targets)}")


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
    diffaug: bool = doc("DiffAugment on real and fake images for the discriminator (official code only; "
                        "docs/deviations.md).")


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = doc("Global batch size (split across processes).")
    lr: float = doc("Base learning rate.")
    lr_batch_scaling: bool = doc("Multiply lr by batch_size / 256 (official tokenizer code).")
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
                        "the first compile of a shape takes tens of seconds on a CPU and is cached on disk.",
                        default=False)  # a default: files written before this key existed still load

    def check(self, path: str) -> None:
        check_positive(self, path, "batch_size", "lr", "steps", "ckpt_every", "log_every")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{key_path(path, 'ema_decay')}: must be in [0, 1), got {self.ema_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"{key_path(path, 'warmup_steps')}: must be >= 0, got {self.warmup_steps}")


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
        check_positive(self, path, "steps", "lr")
        if self.anneal_steps < 0:
            raise ConfigError(f"{key_path(path, 'anneal_steps')}: must be >= 0, got {self.anneal_steps}")
        if self.disc_start < 0:
            raise ConfigError(f"{key_path(path, 'disc_start')}: must be >= 0, got {self.disc_start}")
        if not 0.0 <= self.mask_start < 1.0:
            raise ConfigError(f"{key_path(path, 'mask_start')}: must be in [0, 1), got {self.mask_start}")


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
            raise ConfigError(f"{key_path(path, 'mixed_resolution')}: image sizes must be positive, got {bad}")


@dataclass(frozen=True)
class TransportConfig:
    path: Literal["linear", "cosine"] = doc(
        "Interpolant: linear x_t = (1-t) x + t eps (official code) or cosine.")
    time_sampling: Literal["uniform", "logit_normal"] = doc(
        "Training time distribution (code default uniform; the official README uses logit-normal).")
    time_mean: float = doc("Mean of the logit-normal time distribution.")
    time_std: float = doc("Std of the logit-normal time distribution.")
    cos_weight: float = doc("Weight of LightningDiT's cosine velocity-direction loss (paper Table 9; 0 for SiT).")
    conditional: bool = doc("Class-conditional (true) or unconditional generation (Table 5).")
    class_dropout: float = doc("Label dropout for classifier-free guidance (SiT: 0.1); in [0, 1), 0 trains no "
                               "unconditional model, so `cfg` sampling has nothing to guide with.")

    def check(self, path: str) -> None:
        if not 0.0 <= self.class_dropout < 1.0:
            raise ConfigError(f"{key_path(path, 'class_dropout')}: must be in [0, 1) (0.1 for classifier-free "
                              f"guidance, as SiT), got {self.class_dropout}")


@dataclass(frozen=True)
class GeneratorConfig:
    size: str = doc("Size from the registry `SiT_models` (maetok/models/sit.py).", choices=GENERATOR_SIZES)
    transport: TransportConfig = doc("Flow-matching transport (paper §4.1, App. B Tables 8-9).")
    optim: OptimConfig = doc("Generator optimisation (paper App. B Tables 8-9).")
    latent_norm: Literal["scalar", "channel"] = doc(
        "Latent normalisation before diffusion: one global mean/std (official code) or per channel.")
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
            raise ConfigError(f"{key_path(path, 'depth')}: must be > 0 or null (the size's own), got {self.depth}")
        check_positive(self, path, "preview_steps")
        if any(s <= 0 or s > self.optim.steps for s in self.eval_steps):
            raise ConfigError(f"{key_path(path, 'eval_steps')}: every step must be in "
                              f"[1, optim.steps={self.optim.steps}]")


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
    bf16: bool = doc("bf16 autocast of the generator while sampling (GPU; on a CPU it also speeds up SiT-T). "
                     "The sampler's state and step arithmetic stay in float64.")

    def check(self, path: str) -> None:
        check_positive(self, path, "num_steps", "num_samples", "batch_size")
        if not 0.0 <= self.cfg_interval_low <= self.cfg_interval_high <= 1.0:
            raise ConfigError(f"{key_path(path, 'cfg_interval_low')}/{key_path(path, 'cfg_interval_high')}: "
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
    bf16: bool = doc("bf16 autocast for stand-in training (the CNNs train faster on CPUs with AMX/AVX512-BF16).")

    def check(self, path: str) -> None:
        check_positive(self, path, "batch_size", "lr")
        for name in ("teacher_steps", "evaluator_steps"):  # 0 at paper scale, where no stand-in is trained
            if getattr(self, name) < 0:
                raise ConfigError(f"{key_path(path, name)}: must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class HiresConfig:
    image_size: int = doc(
        "Image side of the tokenizer variants with `resolution: hires` and of everything built on them "
        "(paper: 512, Tables 3, 4, 11). Rule prepare_hires derives the data from the prepared base data: the "
        "same file lists center-cropped at this size (imagefolder), or the base images upsampled (bicubic) "
        "to it (fashion_mnist: a STAND-IN for a higher-resolution dataset).")

    def check(self, path: str) -> None:
        check_positive(self, path, "image_size")


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
        check_positive(self, path, "num_samples")
        if self.generator_step is not None and self.generator_step <= 0:
            raise ConfigError(f"{key_path(path, 'generator_step')}: must be > 0 (or null for the final EMA)")


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
        check_positive(self, path, "tokenizer", "generator")


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
            raise ConfigError(f"{key_path(path, 'sha256')}: {self.sha256!r} is not a sha256 (64 hex digits): write the "
                              f"output of `sha256sum {self.path}`, or null")
        if (self.latent_mean is None) != (self.latent_std is None):
            raise ConfigError(f"{key_path(path, 'latent_mean')}/{key_path(path, 'latent_std')}: give both or neither")
        if self.latent_std is not None and self.latent_std <= 0:
            raise ConfigError(f"{key_path(path, 'latent_std')}: must be > 0, got {self.latent_std}")


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
            raise ConfigError(f"{key_path(path, 'hires.image_size')}: {self.hires.image_size} must be larger than "
                              f"{key_path(path, 'data.image_size')} = {self.data.image_size}")
        classes = self.data.num_classes
        for key, n in (("sampling.num_samples", self.sampling.num_samples),
                       ("cfg_sweep.num_samples", self.cfg_sweep.num_samples)):
            if n % classes:
                raise ConfigError(f"{key_path(path, key)}: {n} is not divisible by "
                                  f"{key_path(path, 'data.num_classes')} = {classes}, so the class-balanced labels of "
                                  f"the samples cannot be balanced: use a multiple of {classes}")
