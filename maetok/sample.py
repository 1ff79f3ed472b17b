"""Sampling a trained generator for gFID (paper §4.1, App. C.2; official `generate_sit.py`).

Euler ODE or Euler-Maruyama SDE per `SamplingConfig`. Guidance names (`parse_guidance`):
"cfg" applies the configured CFG scale on [cfg_interval_low, cfg_interval_high] (t = 1 noise),
"nocfg" uses the conditional model alone, and "cfg<scale>_<low>-<high>" (e.g. "cfg1.9_0-0.75")
is one point of the paper's Table 12 sweep (`Params.job_sampling` gives those jobs
`cfg_sweep.num_samples`). Labels are exactly class-balanced (sample i has class i % C;
the official script draws them at random). All noise is keyed by the global
sample index (`IndexedNoise`), so any shard [start, end) regenerates the same samples.
Latents are un-normalised with the statistics the generator was trained with, recorded in its
file (`generator_stats`: the latent cache's for our generators, the official vq_mean / vq_std for
a released SiT imported by `maetok import-official`), and decoded by the tokenizer;
images are clamped to [-1, 1] and mapped to uint8 by round((x + 1) * 127.5), the inverse
of the data loader's scaling.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from maetok import config as C
from maetok import latents as latent_cache
from maetok.latents import LatentCacheError, LatentStats
from maetok.models.io import load_generator
from maetok.transport import IndexedNoise, balanced_labels, build_transport, initial_noise, null_labels
from maetok.utils.device import bf16_autocast
from maetok.utils.images import save_grid, to_uint8
from maetok.utils.io import atomic_path, sha256_file

GUIDANCE = ("nocfg", "cfg")


@dataclass(frozen=True)
class Guidance:
    scale: float                    # 1.0: no guidance
    interval: tuple[float, float]   # t in [low, high] is guided


def check_guidance(name: str) -> str:
    """`name` if it is a guidance name (see `parse_guidance`), else a ValueError saying what is valid."""
    if name in GUIDANCE:
        return name
    point = C.sweep_point(name)
    if point is None:
        raise ValueError(f"guidance must be 'nocfg', 'cfg' or 'cfg<scale>_<low>-<high>' (e.g. 'cfg1.9_0-0.75'), "
                         f"got {name!r}")
    if not point[1] <= point[2] <= 1.0:
        raise ValueError(f"guidance {name!r}: the interval needs 0 <= low <= high <= 1")
    return name


def parse_guidance(name: str, cfg: C.SamplingConfig) -> Guidance:
    """The setting a guidance name stands for: "nocfg", "cfg" (the configured w/ CFG setting) or a
    Table 12 sweep point "cfg<scale>_<low>-<high>" such as "cfg1.9_0-0.75"."""
    if check_guidance(name) == "nocfg":
        return Guidance(1.0, (0.0, 1.0))
    if name == "cfg":
        return Guidance(cfg.cfg_scale, (cfg.cfg_interval_low, cfg.cfg_interval_high))
    scale, low, high = C.sweep_point(name)
    return Guidance(scale, (low, high))


def sample_latents(model, transport, idx: torch.Tensor, y: torch.Tensor, seed: int, sampler: str, num_steps: int,
                   t_last: float = 0.04, cfg_scale: float = 1.0, cfg_interval=(0.0, 1.0),
                   device: torch.device | str = "cpu", bf16: bool = True) -> torch.Tensor:
    """Normalised latents x_0 (B, L, H) of global samples `idx` with labels `y` (B,); the model runs
    under bf16 autocast if `bf16`."""
    device = torch.device(device)
    shape = (model.num_tokens, model.in_channels)
    z = initial_noise(idx, shape, seed).to(device)
    if cfg_scale != 1.0:
        model_fn = functools.partial(model.forward_with_cfg, cfg_scale=cfg_scale, cfg_interval=tuple(cfg_interval))
    else:
        model_fn = model.forward
    with torch.no_grad(), bf16_autocast(device.type, bf16):
        if sampler == "sde":
            noise = IndexedNoise(idx, seed, stream=1)
            return transport.sample_sde(num_steps, t_last)(z, model_fn, noise_fn=noise, y=y.to(device)).float()
        return transport.sample_ode(num_steps)(z, model_fn, y=y.to(device)).float()


def check_pairing(info: dict, stats: LatentStats, tokenizer_path: str | Path, generator_path: str | Path,
                  size: str = "") -> None:
    """The generator, the latent cache and the tokenizer must belong together."""
    built, cached = (info["num_tokens"], info["latent_dim"]), (stats.num_latent_tokens, stats.latent_dim)
    if built != cached:
        raise LatentCacheError(
            f"generator {generator_path} ({size or 'SiT'}) was trained on latents (L, H) = {built}, but the latent "
            f"cache {stats.directory} holds (L, H) = {cached} (tokenizer "
            f"{stats.raw.get('tokenizer_path')}): pass the latents and tokenizer this generator was trained with, "
            "or retrain the generator on these latents")
    stats.check_tokenizer(info["tokenizer_sha256"], f"generator {generator_path}")
    sha = sha256_file(tokenizer_path)
    if sha != stats.tokenizer_sha256:
        raise LatentCacheError(f"tokenizer {tokenizer_path} (sha256 {sha[:12]}...) is not the one the latent "
                               f"cache and generator were made with ({stats.tokenizer_sha256[:12]}...); "
                               "rebuild the latents and the generator for it")


def generator_stats(info: dict, stats: LatentStats) -> LatentStats:
    """`stats` (the latent cache's) with the normalisation the generator's file records (`latent_stats`):
    what its latents were normalised with in training. For our generators the two agree (the cache it
    was trained on); a released SiT was trained on the official scalar vq_mean / vq_std, which the
    importer records and which the cache's own statistics (from our encodings) need not equal."""
    rec = info.get("latent_stats") or {}
    if not rec:
        return stats
    return dataclasses.replace(stats, mean=float(rec["mean"]), std=float(rec["std"]),
                               channel_mean=tuple(map(float, rec["channel_mean"])),
                               channel_std=tuple(map(float, rec["channel_std"])))


def save_class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, path: str | Path,
                    per_row: int = 10, classes=None) -> None:
    """PNG grid of (N, H, W, 3) uint8 samples: one row per class (its first `per_row` samples), for every
    class or the given `classes`; unconditional samples (null labels) fill per_row rows in order."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    labels = torch.as_tensor(labels)
    if (labels < num_classes).any():
        rows = []
        for c in range(num_classes) if classes is None else classes:
            row = x[labels == c][:per_row]
            rows.append(torch.cat([row, torch.full((per_row - len(row), *x.shape[1:]), 255, dtype=torch.uint8)]))
        x = torch.cat(rows)
    else:
        x = x[: per_row * per_row]
    save_grid(x, path, nrow=per_row, scale=4 if x.shape[-1] <= 64 else 1)


def sample_generator(cfg: C.SamplingConfig, generator: str | Path, latents: str | Path, tokenizer: str | Path,
                     out: str | Path, guidance: str, seed: int = 0, grid: str | Path | None = None,
                     start: int = 0, end: int | None = None, device: str | torch.device | None = None,
                     progress: bool = True) -> dict:
    """Samples [start, end) (default: all cfg.num_samples; `guidance`: see `parse_guidance`) -> `out` .npz
    with images (N, H, W, 3) uint8, labels (N,) int64 (the null class C for unconditional models) and
    indices (N,); returns a summary."""
    setting = parse_guidance(guidance, cfg)
    t0 = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, gcfg, info = load_generator(generator, device)
    stats = LatentStats.load(latents)
    check_pairing(info, stats, tokenizer, generator, gcfg.size)
    stats = generator_stats(info, stats)
    if setting.scale != 1.0 and not gcfg.transport.conditional:
        raise C.ConfigError(f"{generator} is unconditional; classifier-free guidance needs a conditional model "
                         "(use guidance 'nocfg')")
    tok, _, _ = latent_cache.load_tokenizer(tokenizer, device)
    transport = build_transport(gcfg.transport)
    end = cfg.num_samples if end is None else end
    C_ = info["num_classes"]
    if gcfg.transport.conditional and cfg.num_samples % C_:
        key = "sampling.num_samples" if guidance in GUIDANCE else "cfg_sweep.num_samples"
        raise C.ConfigError(f"{key} = {cfg.num_samples} is not divisible by the {C_} classes, so the "
                         f"class-balanced labels would not be balanced: set `{key}` in params.yaml "
                         "to a multiple of the number of classes")
    labels_all = balanced_labels(end, C_) if gcfg.transport.conditional else null_labels(end, C_)
    images, labels = [], []
    for a in tqdm(range(start, end, cfg.batch_size), disable=not progress, desc=f"sample {guidance}", mininterval=10):
        idx = torch.arange(a, min(a + cfg.batch_size, end))
        y = labels_all[idx]
        x0 = sample_latents(model, transport, idx, y, seed, cfg.sampler, cfg.num_steps, cfg.sde_t_last, setting.scale,
                            setting.interval, device, cfg.bf16)
        with torch.no_grad():
            x = tok.decode(stats.denormalize(x0, gcfg.latent_norm))
        images.append(to_uint8(x).permute(0, 2, 3, 1).cpu())
        labels.append(y)
    images_np = torch.cat(images).numpy()
    labels_np = torch.cat(labels).numpy().astype(np.int64)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=images_np, labels=labels_np, indices=np.arange(start, end, dtype=np.int64))
    if grid:
        save_class_grid(images_np, labels_np, C_, grid)
    return {"num_samples": end - start, "start": start, "guidance": guidance, "sampler": cfg.sampler,
            "num_steps": cfg.num_steps, "cfg_scale": setting.scale, "cfg_interval": list(setting.interval),
            "seconds": round(time.perf_counter() - t0, 1)}


def preview_grid(model, gcfg: C.GeneratorConfig, stats: LatentStats, tokenizer: str | Path, out: str | Path,
                 seed: int = 0, per_class: int = 8, cfg_scale: float = 4.0, max_classes: int = 10,
                 batch_size: int = 64) -> None:
    """Training-end preview as the official script's: Euler ODE (`preview_steps` steps, official 50), CFG 4.0;
    one row per class for at most `max_classes` classes spread over the labels (ImageNet: 0, 111, ..., 999;
    all 1000 would be 8000 samples), sampled and decoded `batch_size` at a time, with bf16 autocast where
    training has it (`optim.bf16`, CUDA only)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    tok, _, _ = latent_cache.load_tokenizer(tokenizer, device)
    C_ = stats.num_classes
    classes = torch.linspace(0, C_ - 1, min(C_, max_classes)).round().long().unique()
    n = per_class * len(classes)
    y = classes.repeat_interleave(per_class) if gcfg.transport.conditional else null_labels(n, C_)
    scale = cfg_scale if gcfg.transport.conditional else 1.0
    transport = build_transport(gcfg.transport)
    bf16 = gcfg.optim.bf16 and device.type == "cuda"
    images = []
    for idx in torch.arange(n).split(batch_size):
        x0 = sample_latents(model, transport, idx, y[idx], seed, "ode", gcfg.preview_steps, cfg_scale=scale,
                            device=device, bf16=bf16)
        with torch.no_grad():
            images.append(to_uint8(tok.decode(stats.denormalize(x0, gcfg.latent_norm))).permute(0, 2, 3, 1).cpu())
    save_class_grid(torch.cat(images).numpy(), y.numpy(), C_, out, per_row=per_class, classes=classes.tolist())
    model.train(was_training)
