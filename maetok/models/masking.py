"""Mask modelling (paper §3.2): the per-batch mask ratio of stage 1 and the random token mask.

Masking uses torch's RNG (seedable), where the official code uses NumPy's unseeded one.
"""

import math

import torch

from maetok.models.choices import MASK_RATIO_DISTS


def _normal_cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def truncnorm_mean(low, high, std=0.25):
    """Mean of N(high, std^2) truncated to [low, high] (the official code's mask-ratio law)."""
    if low == high:
        return low
    a = (low - high) / std
    pdf = lambda u: math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    return high + std * (pdf(a) - pdf(0.0)) / (0.5 - _normal_cdf(a))


def check_mask_ratio(low, high, dist="truncnorm"):
    """ValueError unless 0 <= low <= high <= 1 and dist is known."""
    if not 0.0 <= low <= 1.0 or not 0.0 <= high <= 1.0:
        raise ValueError(f"mask_ratio_low ({low}) and mask_ratio_high ({high}) must lie in [0, 1]")
    if low > high:
        raise ValueError(f"mask_ratio_low ({low}) must be <= mask_ratio_high ({high})")
    if dist not in MASK_RATIO_DISTS:
        raise ValueError(f"unknown mask_ratio_dist {dist!r}; valid: {list(MASK_RATIO_DISTS)}")


def sample_mask_ratio(low, high, dist="truncnorm", std=0.25, generator=None):
    """One mask ratio for a whole batch (the official code draws one per forward).

    "truncnorm": the official `truncnorm(a=(low-high)/std, b=0, loc=high, scale=std)`, i.e. a
    normal centred on `high` truncated to [low, high]; density rises towards `high`, mean 0.505 for
    (0.4, 0.6). "uniform": U[low, high], a literal reading of the paper's "40-60%".
    """
    check_mask_ratio(low, high, dist)
    u = torch.rand((), dtype=torch.float64, device="cpu", generator=generator).item()
    if low == high:
        return low
    if dist == "uniform":
        return low + u * (high - low)
    # Inverse-CDF sampling between Phi(a) and Phi(0) = 0.5.
    cdf_a = _normal_cdf((low - high) / std)
    q = torch.tensor(cdf_a + u * (0.5 - cdf_a), dtype=torch.float64)
    return min(max(high + std * torch.special.ndtri(q).item(), low), high)


def random_masking(batch_size, num_tokens, mask_ratio, device=None, generator=None):
    """Boolean mask (B, N), True = masked; ceil(N * ratio) random tokens per sample (as the official code).

    A generator must live on `device`.
    """
    num_masked = math.ceil(round(num_tokens * mask_ratio, 6))
    noise = torch.rand(batch_size, num_tokens, device=device, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # a random permutation per sample
    return ranks < num_masked
