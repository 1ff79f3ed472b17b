"""Training loss and samplers for velocity-prediction flow models (SiT / LightningDiT).

The model enters only as a callable: training calls `model(x_t, t, **model_kwargs)`,
sampling calls `model_fn(x, t, **model_kwargs)`; both return the velocity (B, ...) for
x: (B, ...) and t: (B,). Classifier-free guidance is therefore part of `model_fn`, e.g.
`functools.partial(model.forward_with_cfg, cfg_scale=1.9, cfg_interval=(0.0, 0.75))`.
Applying guidance to v rather than to the SDE drift (as the official sampler does) gives
the same update: the drift d = v - w/2 * score is affine in v with a coefficient and an
offset that do not depend on the label, so mixing the two drifts equals mixing the two
velocities first.

Labels: label dropout for CFG training (p = 0.1) lives in the model's label embedder, as
in DiT, and is active only in train mode. Unconditional models (paper Table 5) are
trained and sampled with every label set to the null class, see `null_labels`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from maetok.transport import integrators
from maetok.transport.path import PathType, make_path

if TYPE_CHECKING:
    from maetok.config import TransportConfig


class TimeSampling(enum.StrEnum):
    UNIFORM = "uniform"            # t ~ U(0, 1): the SiT default
    LOGIT_NORMAL = "logit_normal"  # log(sigma_t / alpha_t) ~ N(mean, std^2)


class Transport:
    """Path + training-time distribution + loss weights; builds sampler closures.

    path_type: PathType.LINEAR (official MAETok) or PathType.COSINE.
    time_sampling: TimeSampling.UNIFORM, or LOGIT_NORMAL, which draws n ~ N(mean, std^2)
        and sets sigma_t / alpha_t = exp(n): t = sigmoid(n) on the linear path and
        t = (2 / pi) atan(exp(n)) on the cosine path, as the official `lognormal`
        weighting does.
    cos_weight: weight of LightningDiT's velocity-direction loss (paper Table 9); 0 for SiT.
    Strings are accepted and converted to the enums here, once; a misspelt value raises.
    """

    def __init__(self, path_type=PathType.LINEAR, time_sampling=TimeSampling.UNIFORM,
                 time_mean=0.0, time_std=1.0, cos_weight=0.0):
        self.path_type = PathType(path_type)
        self.path = make_path(self.path_type)
        self.time_sampling = TimeSampling(time_sampling)
        self.time_mean = float(time_mean)
        self.time_std = float(time_std)
        self.cos_weight = float(cos_weight)

    # --- training -------------------------------------------------------------------
    def sample_time(self, n, device=None, generator=None):
        """Training times t: (n,) in [0, 1]."""
        if self.time_sampling is TimeSampling.UNIFORM:
            return torch.rand(n, device=device, generator=generator)
        z = torch.randn(n, device=device, generator=generator)
        return self.path.t_from_ratio(torch.exp(self.time_mean + self.time_std * z))

    def training_losses(self, model, x, model_kwargs=None, t=None, eps=None):
        """Flow-matching loss on a batch of data latents x: (B, L, H).

        Returns batch means {"loss": mse + cos_weight * cos, "mse": ..., "cos": ...}.
        "mse" averages (v_pred - v)^2 over every element (as the official code); "cos" is the mean
        over tokens of 1 - cos(v_pred, v) along the channel dim, computed only when
        cos_weight > 0 (else reported as 0). t and eps may be given for reproducibility.
        """
        model_kwargs = model_kwargs or {}
        if t is None:
            t = self.sample_time(x.shape[0], device=x.device)
        if eps is None:
            eps = torch.randn_like(x)
        x_t = self.path.interpolate(x, eps, t)
        v = self.path.velocity(x, eps, t)
        v_pred = model(x_t, t, **model_kwargs)
        mse = (v_pred - v).pow(2).mean()
        if self.cos_weight > 0:
            cos = (1.0 - F.cosine_similarity(v_pred, v, dim=-1)).mean()
        else:
            cos = torch.zeros((), device=x.device, dtype=mse.dtype)
        return {"loss": mse + self.cos_weight * cos, "mse": mse, "cos": cos}

    # --- sampling -------------------------------------------------------------------
    # State is integrated in float64 (as the official sampler); the model sees z's dtype.
    def _velocity(self, model_fn, z_dtype, model_kwargs):
        def velocity(x, t):
            t_batch = t.expand(x.shape[0]).to(z_dtype)
            return model_fn(x.to(z_dtype), t_batch, **model_kwargs).to(x.dtype)
        return velocity

    def sample_ode(self, num_steps=250):
        """Euler ODE sampler (LightningDiT, paper Table 9): t = linspace(1, 0, N + 1).

        Returns sample_fn(z, model_fn, **model_kwargs) -> x_0 with z: (B, ...) noise.
        """
        def sample_fn(z, model_fn, **model_kwargs):
            x = z.to(torch.float64)
            t_grid = torch.linspace(1.0, 0.0, num_steps + 1, dtype=x.dtype, device=x.device)
            drift = self._velocity(model_fn, z.dtype, model_kwargs)
            return integrators.euler_ode(drift, x, t_grid).to(z.dtype)
        return sample_fn

    def sample_sde(self, num_steps=250, t_last=0.04):
        """Euler-Maruyama sampler (SiT, paper Table 8), the official grid:
        t = linspace(1, t_last, N) then 0, so N model calls; the last step 0.04 -> 0 is
        deterministic. Drift v - w/2 * score with w(t) = path.diffusion(t) (= 2t, linear).

        Returns sample_fn(z, model_fn, noise_fn=None, **model_kwargs) -> x_0. noise_fn(x)
        draws the step noise (default torch.randn_like); pass an `IndexedNoise` with
        stream=1 for per-sample reproducible sampling across shards.
        """
        def sample_fn(z, model_fn, noise_fn=None, **model_kwargs):
            x = z.to(torch.float64)
            t_grid = torch.linspace(1.0, t_last, num_steps, dtype=x.dtype, device=x.device)
            t_grid = torch.cat([t_grid, t_grid.new_zeros(1)])
            velocity = self._velocity(model_fn, z.dtype, model_kwargs)
            path = self.path

            def drift(x, t):
                v = velocity(x, t)
                t_batch = t.expand(x.shape[0])
                return v - 0.5 * path.diffusion(t) * path.velocity_to_score(v, x, t_batch)

            noise = torch.randn_like if noise_fn is None else noise_fn
            x = integrators.euler_maruyama_sde(drift, path.diffusion, x, t_grid, noise)
            return x.to(z.dtype)
        return sample_fn


def build_transport(cfg: TransportConfig) -> Transport:
    """The `Transport` of a generator's `transport` block (params.yaml `generator.transport`)."""
    return Transport(cfg.path, cfg.time_sampling, cfg.time_mean, cfg.time_std, cfg.cos_weight)


# --- labels and seeded noise for sampling ---------------------------------------------
def balanced_labels(n, num_classes):
    """Labels of global samples 0..n-1: sample i gets class i % num_classes, so n = 50k
    over 1000 classes gives 50 per class, and a shard [a, b) is balanced_labels(b, C)[a:b].
    (The official script draws labels uniformly at random; ours are exactly balanced.)"""
    return torch.arange(n) % num_classes


def null_labels(n, num_classes):
    """All-null labels (index num_classes): unconditional training and sampling."""
    return torch.full((n,), num_classes, dtype=torch.long)


class IndexedNoise:
    """Gaussian noise keyed by global sample index: sample i always draws from a CPU
    generator seeded from (seed, i, stream), so any shard of a 50k sample set, in any
    batch split and on any device, regenerates exactly the same noise.

    stream 0 is the initial noise, stream 1 the SDE step noise (successive calls draw
    successive steps)."""

    def __init__(self, indices, seed, stream=0):
        self.generators = []
        for i in torch.as_tensor(indices).tolist():
            words = np.random.SeedSequence([seed, i, stream]).generate_state(2, np.uint32)
            generator = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
            self.generators.append(generator)

    def sample(self, shape, dtype=torch.float32, device=None):
        """(len(indices), *shape) standard normal."""
        out = torch.stack([torch.randn(shape, generator=g) for g in self.generators])
        return out.to(device=device, dtype=dtype)

    def __call__(self, x):
        """Noise like x: (len(indices), ...), as integrators' noise_fn."""
        return self.sample(x.shape[1:], dtype=x.dtype, device=x.device)


def initial_noise(indices, shape, seed):
    """Starting noise z: (len(indices), *shape) for the given global sample indices."""
    return IndexedNoise(indices, seed, stream=0).sample(shape)
