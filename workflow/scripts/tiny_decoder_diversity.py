"""Decoder-output diversity, PSNR and latent statistics of tiny tokenizers (docs/tiny_mechanism.md).

Usage: python workflow/scripts/tiny_decoder_diversity.py OUT.json NAME=SPEC [NAME=SPEC ...]
(from the repository root, after the tokenizers are built; DATA below is the tiny dataset)
SPEC: path/to/tokenizer.safetensors                 (the saved stage output: EMA weights)
      path/to/tokenizer.safetensors@ckptdir/step_X:model   (same architecture, weights from a checkpoint
                                                            module file, aux decoders dropped)

All pixel distances: images in [0, 1], one channel (the three are copies), 32x32 = 1024 dims, L2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from maetok.data import ImageDataset
from maetok.models.io import load_tokenizer
from maetok.models.masking import random_masking

torch.set_num_threads(1)
DATA = "results/tiny/data"
N_TEST = 1000
N_TRAIN = 10000
N_PROBE = 5000


def load(spec):
    path, _, ck = spec.partition("@")
    model, cfg, info = load_tokenizer(path)
    if ck:
        d, _, module = ck.partition(":")
        state = load_file(str(Path(d) / f"{module}.safetensors"))
        state = {k: v for k, v in state.items() if not k.startswith("aux_decoders.")}
        model.load_state_dict(state)
    return model.eval()


def images(split, idx):
    ds = ImageDataset(DATA, split)
    x = torch.from_numpy(np.array(ds.images[np.sort(idx)])).float().div(127.5).sub(1)
    y = torch.as_tensor(np.asarray(ds.labels)[np.sort(idx)])
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), y


@torch.no_grad()
def encode(model, x, mask_ratio=0.0, seed=0, bs=250):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(x), bs):
        xb = x[i:i + bs]
        mask = None
        if mask_ratio > 0:
            gh = xb.shape[-1] // model.patch_size
            mask = random_masking(len(xb), gh * gh, mask_ratio, generator=g)
        out.append(model.encode(xb, mask))
    return torch.cat(out)


@torch.no_grad()
def decode(model, z, bs=250):
    return torch.cat([model.decode(z[i:i + bs]) for i in range(0, len(z), bs)])


def gray01(x):
    return x.clamp(-1, 1).add(1).div(2).mean(1).flatten(1)  # (N, 1024) in [0, 1]


def nn_dist(a, b=None):
    """Per row of a: L2 to the nearest row of b (of a itself, excluding self, when b is None)."""
    d = torch.cdist(a.double(), (a if b is None else b).double())
    if b is None:
        d.fill_diagonal_(float("inf"))
    return d.min(1).values.float()


def psnr(a, b):
    mse = (a - b).pow(2).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(1 / mse)


def grad_energy(g):
    im = g.view(-1, 32, 32)
    return ((im[:, 1:] - im[:, :-1]).abs().mean() + (im[:, :, 1:] - im[:, :, :-1]).abs().mean()).item()


def ridge_probe(ztr, ytr, zte, yte, lam=1e-1):
    mu, sd = ztr.mean(0), ztr.std(0).clamp_min(1e-6)
    A, B = (ztr - mu) / sd, (zte - mu) / sd
    A = torch.cat([A, torch.ones(len(A), 1)], 1).double()
    B = torch.cat([B, torch.ones(len(B), 1)], 1).double()
    Y = torch.nn.functional.one_hot(ytr, 10).double()
    W = torch.linalg.solve(A.T @ A + lam * len(A) * torch.eye(A.shape[1], dtype=A.dtype), A.T @ Y)
    return (B @ W).argmax(1).eq(yte).float().mean().item()


def ridge_pixels(ztr, ptr, zte, pte, lam=1e-3):
    """PSNR of a linear (ridge) map latents -> pixels: decoder-independent pixel information in z."""
    mu, sd = ztr.mean(0), ztr.std(0).clamp_min(1e-6)
    A = torch.cat([(ztr - mu) / sd, torch.ones(len(ztr), 1)], 1).double()
    B = torch.cat([(zte - mu) / sd, torch.ones(len(zte), 1)], 1).double()
    W = torch.linalg.solve(A.T @ A + lam * len(A) * torch.eye(A.shape[1], dtype=A.dtype), A.T @ ptr.double())
    return psnr((B @ W).float().clamp(0, 1), pte).mean().item()


def latent_stats(z, ref_std=None):
    zf = z.flatten(1)
    c = z.reshape(-1, z.shape[-1])
    std = ref_std if ref_std is not None else zf.std().item()
    nn = nn_dist(zf / std)
    pair = torch.cdist(zf[:300].double() / std, zf[300:600].double() / std).mean().item()
    ev = torch.linalg.eigvalsh(torch.cov(zf.T.double())).clamp_min(0)
    return {"global_mean": zf.mean().item(), "global_std": zf.std().item(),
            "chan_std_min": c.std(0).min().item(), "chan_std_max": c.std(0).max().item(),
            "chan_absmean_max": c.mean(0).abs().max().item(),
            "img_norm_mean": zf.norm(dim=1).mean().item(),
            "nn_dist_in_std_units": nn.mean().item(), "mean_pair_dist_in_std_units": pair,
            "nn_over_pair": nn.mean().item() / pair,
            "participation_ratio": (ev.sum() ** 2 / ev.pow(2).sum()).item(),
            "top1_var_frac": (ev.max() / ev.sum()).item()}


def main():
    out_path, specs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    rng = np.random.default_rng(0)
    te_idx = rng.choice(10000, N_TEST, replace=False)
    tr_idx = rng.choice(60000, N_TRAIN, replace=False)
    xte, yte = images("val", te_idx)
    xtr, ytr = images("train", tr_idx)
    gte, gtr = gray01(xte), gray01(xtr)
    class_means = torch.stack([gtr[ytr == k].mean(0) for k in range(10)])
    real = {"nn_among_set": nn_dist(gte).mean().item(),
            "frac_nn_lt_1": nn_dist(gte).lt(1.0).float().mean().item(),
            "nn_to_train": nn_dist(gte, gtr).mean().item(),
            "total_pixel_var": gte.var(0).sum().item(),
            "per_image_pixel_std": gte.std(1).mean().item(),
            "grad_energy": grad_energy(gte),
            "dist_to_own_class_mean": (gte - class_means[yte]).norm(dim=1).mean().item()}
    results = json.loads(Path(out_path).read_text()) if Path(out_path).exists() else {}
    results["real"] = real
    print("real", json.dumps(real))
    for name, spec in specs:
        t0 = time.time()
        model = load(spec)
        r = {"spec": spec}
        z0 = encode(model, xte, 0.0)
        z5 = encode(model, xte, 0.5, seed=1)
        ztr0 = encode(model, xtr[:N_PROBE], 0.0)
        ztr5 = encode(model, xtr[:N_PROBE], 0.5, seed=2)
        std0 = ztr0.flatten(1).std().item()
        r["latent_mask0"] = latent_stats(z0, std0)
        r["latent_mask05"] = latent_stats(z5, std0)
        r["latent_shift_mask05_vs_0"] = {
            "rel_l2": ((z5 - z0).flatten(1).norm(dim=1) / z0.flatten(1).norm(dim=1)).mean().item(),
            "cos": torch.nn.functional.cosine_similarity(z5.flatten(1), z0.flatten(1)).mean().item(),
            "mean_pair_dist_over_shift": None}
        r["probe_acc_mask0"] = ridge_probe(ztr0.flatten(1), ytr[:N_PROBE], z0.flatten(1), yte)
        r["probe_acc_mask05"] = ridge_probe(ztr5.flatten(1), ytr[:N_PROBE], z5.flatten(1), yte)
        r["linear_pixel_psnr_mask0"] = ridge_pixels(ztr0.flatten(1), gtr[:N_PROBE], z0.flatten(1), gte)
        r["linear_pixel_psnr_mask05"] = ridge_pixels(ztr5.flatten(1), gtr[:N_PROBE], z5.flatten(1), gte)
        for tag, z in (("mask0", z0), ("mask05", z5)):
            rec = gray01(decode(model, z))
            nn = nn_dist(rec)
            r[f"recon_{tag}"] = {
                "psnr": psnr(rec, gte).mean().item(),
                "nn_among_set": nn.mean().item(),
                "frac_nn_lt_1": nn.lt(1.0).float().mean().item(),
                "nn_to_train": nn_dist(rec, gtr).mean().item(),
                "total_pixel_var": rec.var(0).sum().item(),
                "per_image_pixel_std": rec.std(1).mean().item(),
                "grad_energy": grad_energy(rec),
                "dist_to_own_class_mean": (rec - class_means[yte]).norm(dim=1).mean().item(),
                "dist_to_input": (rec - gte).norm(dim=1).mean().item(),
                "frac_closer_to_class_mean_than_input": ((rec - class_means[yte]).norm(dim=1)
                                                         < (rec - gte).norm(dim=1)).float().mean().item(),
            }
        # decoder sensitivity: output distance / latent distance over random pairs (std units)
        perm = torch.randperm(N_TEST, generator=torch.Generator().manual_seed(3))
        rec0 = gray01(decode(model, z0))
        dz = (z0 - z0[perm]).flatten(1).norm(dim=1) / std0
        dx = (rec0 - rec0[perm]).norm(dim=1)
        dreal = (gte - gte[perm]).norm(dim=1)
        r["pair_dist"] = {"latent_std_units": dz.mean().item(), "recon": dx.mean().item(), "real": dreal.mean().item(),
                          "recon_over_real": (dx / dreal.clamp_min(1e-6)).mean().item()}
        r["seconds"] = round(time.time() - t0, 1)
        results[name] = r
        print(name, json.dumps(r), flush=True)
        Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
