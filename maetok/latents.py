"""Latent cache for the generator (paper §4.1; official `inference/cache_latent.py`).

`cache_latents` encodes the train split, its horizontal flips and the val split with a
frozen tokenizer in eval mode and writes one directory::

    <out>/train.npy        (N, L, H) float16   latents of the train images
    <out>/train_flip.npy   (N, L, H) float16   latents of the flipped train images (if data.hflip)
    <out>/train_labels.npy (N,)      int64
    <out>/val.npy          (M, L, H) float16
    <out>/val_labels.npy   (M,)      int64
    <out>/stats.json       normalisation statistics + provenance (tokenizer sha256)

Single .npy files are written in place through `np.lib.format.open_memmap`, so they stay
readable with `np.load(mmap_mode="r")` at any size (ImageNet: 1.28M x 128 x 32 fp16 =
10.5 GB per file) without sharding. The directory is built under a temporary name and
renamed into place at the end.

Normalisation: the official code trains on x = (z - mean) / std with scalar
`vq_mean`/`vq_std` whose values are not published; we compute them as the global mean
and std of the plain (unflipped) train latents, all elements pooled. Per-channel
statistics (one mean/std per latent channel, pooled over images and tokens) are stored
alongside; `GeneratorConfig.latent_norm` picks one. A generator file records the statistics it was
trained with and sampling un-normalises with those (maetok/sample.py: generator_stats): a released SiT
imported with the official vq_mean / vq_std (docs/official_weights.md) is sampled with them, whatever
this cache's own statistics are.

Precision: the encoder runs at the precision its tokenizer trained in (bf16 autocast when the
tokenizer's `optim.bf16` is set, as at both scales; recorded as `encode_autocast` in stats.json).

`LatentDataset` serves normalised training batches; each item is the plain or the
flipped latent at random, as the official `CachedFolder` does (hflip in latent space),
drawn from a generator seeded by (seed, step) so a resumed run sees the same batches.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from maetok.data import ImageDataset, to_unit_range
from maetok.models.io import load_tokenizer
from maetok.utils.device import bf16_autocast, bf16_enabled, compile_enabled
from maetok.utils.io import atomic_dir, load_npy, sha256_file, write_json

LATENT_DTYPE = np.float16
FP16_MAX = float(np.finfo(np.float16).max)
NORMS = ("scalar", "channel")


class LatentCacheError(RuntimeError):
    """A latent cache that is missing, inconsistent, or from another tokenizer."""


# --------------------------------------------------------------------------- encoding
def _uint8_batches(ds: ImageDataset, batch_size: int, workers: int):
    """(x uint8 (B, 3, H, W), y (B,)) over the split in order, without augmentation."""
    if ds.kind == "arrays":
        for i in range(0, len(ds), batch_size):
            x = torch.from_numpy(np.array(ds.images[i : i + batch_size]))
            yield x.unsqueeze(1).expand(-1, 3, -1, -1), torch.as_tensor(np.asarray(ds.labels[i : i + batch_size]))
        return
    items = _Uint8Items(ds)
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=workers, shuffle=False)
    yield from loader


class _Uint8Items(torch.utils.data.Dataset):
    def __init__(self, ds: ImageDataset):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds.uint8(i), int(self.ds.labels[i])


class _Moments:
    """Running per-channel sums in float64 over (N, L, H) latents."""

    def __init__(self, dim: int):
        self.n = 0
        self.s = torch.zeros(dim, dtype=torch.float64)
        self.ss = torch.zeros(dim, dtype=torch.float64)

    def add(self, z: torch.Tensor) -> None:
        z = z.double().reshape(-1, z.shape[-1])
        self.n += z.shape[0]
        self.s += z.sum(0)
        self.ss += z.pow(2).sum(0)

    def stats(self) -> dict:
        mean_c = self.s / self.n
        std_c = (self.ss / self.n - mean_c.pow(2)).clamp_min(0).sqrt()
        mean = self.s.sum() / (self.n * len(self.s))
        std = (self.ss.sum() / (self.n * len(self.s)) - mean.pow(2)).clamp_min(0).sqrt()
        return {"mean": float(mean), "std": float(std), "channel_mean": mean_c.tolist(), "channel_std": std_c.tolist()}


def _encode(model, x: torch.Tensor, pad_to: int | None) -> torch.Tensor:
    """model.encode(x), x zero-padded to `pad_to` images first (a compiled encoder then sees one batch
    shape; in eval mode every image is encoded on its own, so the padding changes nothing)."""
    n = len(x)
    if pad_to is None or n >= pad_to:
        return model.encode(x)
    return model.encode(torch.cat([x, x.new_zeros((pad_to - n, *x.shape[1:]))]))[:n]


@torch.no_grad()
def _encode_split(model, ds, out: Path, name: str, flip: bool, batch_size: int, device, workers: int,
                  moments: _Moments | None, progress: bool, bf16: bool = False, pad_to: int | None = None) -> int:
    L, H = model.num_latent_tokens, model.latent_dim
    n = len(ds)
    plain = np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=LATENT_DTYPE, shape=(n, L, H))
    flipped = (np.lib.format.open_memmap(out / f"{name}_flip.npy", mode="w+", dtype=LATENT_DTYPE, shape=(n, L, H))
               if flip else None)
    labels = np.empty(n, dtype=np.int64)
    i = 0
    for x, y in tqdm(_uint8_batches(ds, batch_size, workers), total=-(-n // batch_size), disable=not progress,
                     desc=f"encode {name}", mininterval=10):
        x = to_unit_range(x.to(device))
        views = [(plain, x)] + ([(flipped, x.flip(-1))] if flip else [])
        for j, (dest, xv) in enumerate(views):
            with bf16_autocast(device.type, bf16):
                z = _encode(model, xv, pad_to).float()  # (B, L, H)
            if tuple(z.shape[1:]) != (L, H):
                raise LatentCacheError(f"tokenizer encode returned {tuple(z.shape)}, expected (B, {L}, {H})")
            if not torch.isfinite(z).all() or z.abs().max() > FP16_MAX:
                raise LatentCacheError(f"{name}: latents of images {i}..{i + len(z) - 1} are non-finite or exceed "
                                       "the float16 range; the tokenizer is broken (check its training log)")
            if moments is not None and j == 0:
                moments.add(z.cpu())
            dest[i : i + len(z)] = z.cpu().numpy().astype(LATENT_DTYPE)
        labels[i : i + len(y)] = np.asarray(y)
        i += len(y)
    for arr in (plain, flipped):
        if arr is not None:
            arr.flush()
    np.save(out / f"{name}_labels.npy", labels)
    return n


def cache_latents(tokenizer_path: str | Path, data_dir: str | Path, out_dir: str | Path, batch_size: int = 256,
                  hflip: bool = True, device: str | torch.device | None = None, workers: int = 0,
                  progress: bool = True) -> dict:
    """Encode train (+ its hflips if `hflip`) and val with the tokenizer; write `out_dir` atomically;
    return stats.json's dict."""
    t0 = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tok_cfg, _ = load_tokenizer(tokenizer_path, device)
    model.eval()
    # Encode at the precision the tokenizer trained in (bf16 autocast when its optim.bf16 is set and
    # the device has bf16, utils/device.py); the cache stores float16 anyway.
    bf16 = bf16_enabled(device.type, tok_cfg is not None and tok_cfg.optim.bf16)  # None: a test double
    # Compile the encoder's blocks when the tokenizer trained compiled (`optim.compile`): 1.9x faster
    # encoding on these CPUs (batch 256, bf16, 1 thread: 90 vs 170 ms); the first job compiles in
    # ~10 s, later ones load the graph from the disk cache.
    pad_to = None
    if tok_cfg is not None and compile_enabled(tok_cfg.optim.compile):
        model.compile_blocks(("encoder",))
        pad_to = batch_size  # one batch shape, one graph
    with atomic_dir(out_dir) as tmp:
        train, val = ImageDataset(data_dir, "train"), ImageDataset(data_dir, "val")
        moments = _Moments(model.latent_dim)
        counts = {"train": _encode_split(model, train, tmp, "train", hflip, batch_size, device, workers, moments,
                                         progress, bf16, pad_to),
                  "val": _encode_split(model, val, tmp, "val", False, batch_size, device, workers, None, progress,
                                       bf16, pad_to)}
        stats = {
            **moments.stats(),
            "stats_from": "train split, unflipped latents, all elements pooled (channel_*: pooled per channel)",
            "num_latent_tokens": model.num_latent_tokens,
            "latent_dim": model.latent_dim,
            "num_classes": int(train.manifest["num_classes"]),
            "classes": train.manifest.get("classes"),
            "image_size": int(train.manifest["image_size"]),
            "counts": counts,
            "hflip": hflip,
            "dtype": np.dtype(LATENT_DTYPE).name,
            "encode_autocast": "bf16" if bf16 else "off",
            "tokenizer_path": str(tokenizer_path),
            "tokenizer_sha256": sha256_file(tokenizer_path),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        write_json(tmp / "stats.json", stats)
    return stats


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class LatentStats:
    """Normalisation statistics and provenance of a latent cache (its stats.json)."""
    mean: float
    std: float
    channel_mean: tuple[float, ...]
    channel_std: tuple[float, ...]
    num_latent_tokens: int
    latent_dim: int
    num_classes: int
    tokenizer_sha256: str
    raw: dict
    directory: str = ""

    @classmethod
    def load(cls, latent_dir: str | Path) -> LatentStats:
        path = Path(latent_dir) / "stats.json"
        if not path.is_file():
            raise LatentCacheError(f"{path} not found: build the latent cache with `snakemake {latent_dir}` "
                                   "(rule cache_latents)")
        rebuild = f"delete {latent_dir} and rebuild it with `snakemake {latent_dir}` (rule cache_latents)"
        try:
            raw = json.loads(path.read_text())
            stats = cls(float(raw["mean"]), float(raw["std"]), tuple(map(float, raw["channel_mean"])),
                        tuple(map(float, raw["channel_std"])), int(raw["num_latent_tokens"]), int(raw["latent_dim"]),
                        int(raw["num_classes"]), str(raw["tokenizer_sha256"]), raw, str(latent_dir))
        except json.JSONDecodeError as e:
            raise LatentCacheError(f"{path} is not valid JSON ({e}): the file is truncated or edited; "
                                   f"{rebuild}") from None
        except KeyError as e:
            raise LatentCacheError(f"{path} lacks the key {e.args[0]!r}: {rebuild}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise LatentCacheError(f"{path} holds a value of the wrong type ({e}): {rebuild}") from None
        if len(stats.channel_mean) != stats.latent_dim or len(stats.channel_std) != stats.latent_dim:
            raise LatentCacheError(f"{path}: channel_mean/channel_std have {len(stats.channel_mean)}/"
                                   f"{len(stats.channel_std)} entries, latent_dim is {stats.latent_dim}: {rebuild}")
        return stats

    def mean_std(self, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) broadcastable to (B, L, H): 0-dim for `scalar`, (H,) for `channel`."""
        if norm == "scalar":
            return torch.tensor(self.mean), torch.tensor(max(self.std, 1e-8))
        if norm == "channel":
            return torch.tensor(self.channel_mean), torch.tensor(self.channel_std).clamp_min(1e-8)
        raise ValueError(f"latent_norm must be one of {NORMS}, got {norm!r}")

    def normalize(self, z: torch.Tensor, norm: str) -> torch.Tensor:
        mean, std = self.mean_std(norm)
        return (z - mean.to(z)) / std.to(z)

    def denormalize(self, x: torch.Tensor, norm: str) -> torch.Tensor:
        mean, std = self.mean_std(norm)
        return x * std.to(x) + mean.to(x)

    def check_tokenizer(self, tokenizer_sha256: str, what: str) -> None:
        """Raise if `what` (e.g. a generator checkpoint) was made from another tokenizer's latents."""
        if tokenizer_sha256 != self.tokenizer_sha256:
            raise LatentCacheError(
                f"{what} was made with tokenizer sha256 {tokenizer_sha256[:12]}..., but these latents come from "
                f"tokenizer sha256 {self.tokenizer_sha256[:12]}... ({self.raw.get('tokenizer_path')}). The "
                "generator and the latent cache belong to different tokenizers: rebuild the generator for this "
                "tokenizer (snakemake reruns it once the latents changed), or pass the matching latents.")


def _load_npy(path: Path, rebuild: str, mmap: bool) -> np.ndarray:
    return load_npy(path, mmap, LatentCacheError, rebuild)


def load_latents(latent_dir: str | Path, split: str = "train", flip: bool = False,
                 stats: LatentStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw cached latents (N, L, H) float16, memory-mapped, and labels (N,) int64, checked against
    the cache's stats.json (shape, dtype, label count)."""
    d = Path(latent_dir)
    stats = stats or LatentStats.load(d)
    name = f"{split}_flip" if flip else split
    rebuild = f"delete {d} and rebuild it with `snakemake {d}` (rule cache_latents)"
    z = _load_npy(d / f"{name}.npy", rebuild, mmap=True)
    labels = _load_npy(d / f"{split}_labels.npy", rebuild, mmap=False)
    shape = (stats.num_latent_tokens, stats.latent_dim)
    if z.ndim != 3 or tuple(z.shape[1:]) != shape:
        raise LatentCacheError(f"{d / f'{name}.npy'} holds latents of shape {z.shape}, but {d / 'stats.json'} "
                               f"declares (N, L, H) = (N, {shape[0]}, {shape[1]}): {rebuild}")
    if z.dtype != LATENT_DTYPE:
        raise LatentCacheError(f"{d / f'{name}.npy'} has dtype {z.dtype}, expected {np.dtype(LATENT_DTYPE).name} "
                               f"(cache_latents writes {np.dtype(LATENT_DTYPE).name}): {rebuild}")
    if labels.shape != (len(z),) or not np.issubdtype(labels.dtype, np.integer):
        raise LatentCacheError(f"{d / f'{split}_labels.npy'} holds {labels.dtype} {labels.shape}, expected "
                               f"({len(z)},) integer labels to match {name}.npy: {rebuild}")
    return z, labels


class LatentDataset:
    """Normalised training latents: `batch(idx, step)` -> (x (B, L, H) float32, y (B,) long).

    hflip (and flips cached): each item is the latent of the flipped image with probability 1/2, drawn from a
    generator seeded by (seed, step) over the global batch; `offset` is this rank's first
    position in it, so the global batch is the same for any number of processes.
    """

    def __init__(self, latent_dir: str | Path, norm: str = "scalar", split: str = "train", hflip: bool = True,
                 seed: int = 0):
        self.stats = LatentStats.load(latent_dir)
        self.norm = norm
        self.stats.mean_std(norm)  # validates `norm`
        self.z, self.labels = load_latents(latent_dir, split, stats=self.stats)
        hflip = hflip and split == "train" and self.stats.raw.get("hflip", True)
        self.z_flip = load_latents(latent_dir, split, flip=True, stats=self.stats)[0] if hflip else None
        self.labels = torch.from_numpy(self.labels)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def flips(self, step: int, n: int, offset: int = 0) -> torch.Tensor:
        """Flip choices (n,) bool for positions [offset, offset + n) of the global batch of `step`."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return torch.rand(offset + n, generator=g)[offset:] < 0.5

    def batch(self, idx: torch.Tensor, step: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        idx_np = idx.numpy()
        z = torch.from_numpy(np.asarray(self.z[idx_np])).float()
        if self.z_flip is not None:
            flip = self.flips(step, len(idx), offset)
            if flip.any():
                z_flip = torch.from_numpy(np.asarray(self.z_flip[idx_np[flip.numpy()]])).float()
                z[flip] = z_flip
        return self.stats.normalize(z, self.norm), self.labels[idx]
