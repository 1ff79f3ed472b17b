"""Interpolation paths between data and noise: pure alpha_t / sigma_t math.

Time convention (the official MAETok SiT code, not the original SiT repo):

    x_t = alpha_t * x + sigma_t * eps,   t in [0, 1],   t = 0 is data, t = 1 is noise.

`x` is the (normalised) data latent and `eps ~ N(0, I)`. Sampling therefore integrates
t from 1 down to 0, and the paper's CFG interval [0, 0.75] (App. C.2) reads directly on
this t: guidance is off for the noisiest quarter of the trajectory. (willisma/SiT runs
the other way, t = 0 noise, t = 1 data; its interval would be [0.25, 1].)

The model predicts the velocity v = dx_t/dt = alpha_t' * x + sigma_t' * eps.

    linear:  alpha_t = 1 - t,          sigma_t = t            ->  v = eps - x
    cosine:  alpha_t = cos(pi t / 2),  sigma_t = sin(pi t / 2)  (SiT's "GVP" path)

Nothing here knows about a model; every function works on tensors of any shape, with
`t` broadcast from shape (B,) over the trailing dimensions.
"""

import enum
import math

import torch


class PathType(enum.StrEnum):
    LINEAR = "linear"
    COSINE = "cosine"


def expand_t(t, x):
    """Reshape t: (B,) to (B, 1, ..., 1) so it broadcasts against x: (B, ...)."""
    return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))


class Path:
    """Base class: subclasses give alpha, sigma and their time derivatives."""

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def d_alpha(self, t):
        raise NotImplementedError

    def d_sigma(self, t):
        raise NotImplementedError

    def t_from_ratio(self, r):
        """Invert r = sigma_t / alpha_t (noise-to-signal ratio) to t in [0, 1)."""
        raise NotImplementedError

    # --- the interpolant and its velocity -------------------------------------------
    def interpolate(self, x, eps, t):
        """x_t = alpha_t x + sigma_t eps. x, eps: (B, ...); t: (B,)."""
        t = expand_t(t, x)
        return self.alpha(t) * x + self.sigma(t) * eps

    def velocity(self, x, eps, t):
        """Target velocity dx_t/dt = alpha_t' x + sigma_t' eps."""
        t = expand_t(t, x)
        return self.d_alpha(t) * x + self.d_sigma(t) * eps

    # --- conversions between parameterisations, given x_t ----------------------------
    # Solve the 2x2 system [x_t; v] = [[a, s], [a', s']] [x; eps] for (x, eps).
    def _det(self, t):
        return self.alpha(t) * self.d_sigma(t) - self.sigma(t) * self.d_alpha(t)

    def velocity_to_data(self, v, x_t, t):
        t = expand_t(t, x_t)
        return (self.d_sigma(t) * x_t - self.sigma(t) * v) / self._det(t)

    def velocity_to_noise(self, v, x_t, t):
        t = expand_t(t, x_t)
        return (self.alpha(t) * v - self.d_alpha(t) * x_t) / self._det(t)

    def noise_to_velocity(self, eps, x_t, t):
        """Undefined at alpha_t = 0 (pure noise)."""
        t = expand_t(t, x_t)
        x = (x_t - self.sigma(t) * eps) / self.alpha(t)
        return self.d_alpha(t) * x + self.d_sigma(t) * eps

    def data_to_velocity(self, x, x_t, t):
        """Undefined at sigma_t = 0 (clean data)."""
        t = expand_t(t, x_t)
        eps = (x_t - self.alpha(t) * x) / self.sigma(t)
        return self.d_alpha(t) * x + self.d_sigma(t) * eps

    def velocity_to_score(self, v, x_t, t):
        """Score of p_t for Gaussian eps: grad log p_t(x_t) = -E[eps | x_t] / sigma_t.

        For the linear path this is ((t - 1) v - x_t) / t, as in the official sampler."""
        return -self.velocity_to_noise(v, x_t, t) / expand_t(self.sigma(t), x_t)

    def score_to_velocity(self, score, x_t, t):
        return self.noise_to_velocity(-expand_t(self.sigma(t), x_t) * score, x_t, t)

    def diffusion(self, t):
        """SDE diffusion coefficient w(t) for reverse-time sampling.

        The official sampler uses w = 2t on the linear path; we write it as
        2 sigma_t, which is the same there and extends to the cosine path (our choice).
        Any w >= 0 leaves the marginals of p_t unchanged."""
        return 2.0 * self.sigma(t)


class LinearPath(Path):
    def alpha(self, t):
        return 1.0 - t

    def sigma(self, t):
        return t

    def d_alpha(self, t):
        return -torch.ones_like(t)

    def d_sigma(self, t):
        return torch.ones_like(t)

    def t_from_ratio(self, r):
        return r / (1.0 + r)


class CosinePath(Path):
    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t)

    def sigma(self, t):
        return torch.sin(0.5 * math.pi * t)

    def d_alpha(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def d_sigma(self, t):
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def t_from_ratio(self, r):
        return torch.atan(r) * (2.0 / math.pi)


def make_path(path_type):
    """PathType (or its string value, checked here) -> Path instance."""
    return {PathType.LINEAR: LinearPath, PathType.COSINE: CosinePath}[PathType(path_type)]()
