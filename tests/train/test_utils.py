"""The multi-tensor training helpers match their per-parameter definitions."""

from __future__ import annotations

import copy

import pytest
import torch

from maetok.train.utils import adamw, clip_grad_norm, param_groups, update_ema


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))


def test_update_ema_is_a_lerp_of_every_parameter_and_copies_buffers():
    model, ema = _net(), _net()
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    model(torch.randn(16, 4))  # changes the BatchNorm running stats (buffers)
    before = copy.deepcopy(ema)
    update_ema(ema, model, 0.9)
    for e, b, p in zip(ema.parameters(), before.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        assert torch.equal(e, b)


def test_update_ema_refuses_mismatched_models():
    with pytest.raises(ValueError, match="parameters"):
        update_ema(_net(), torch.nn.Linear(4, 8), 0.9)


def test_fused_adamw_matches_the_reference_implementation():
    # Linear layers only: Adam's m / sqrt(v) on a near-zero gradient (BatchNorm) amplifies rounding.
    a, b = (torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)) for _ in range(2))
    b.load_state_dict(a.state_dict())
    opt_a = adamw(param_groups(a, 0.1), 1e-2, (0.9, 0.95))
    opt_b = torch.optim.AdamW(param_groups(b, 0.1), lr=1e-2, betas=(0.9, 0.95), foreach=False)
    x = torch.randn(32, 4)
    for _ in range(5):
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_clip_grad_norm_bounds_the_global_norm_and_skips_parameters_without_grad():
    net = _net()
    net(torch.randn(8, 4)).sum().mul(100).backward()
    net[1].weight.grad = None
    total = clip_grad_norm(net.parameters(), 1.0)
    assert total > 1.0
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters() if p.grad is not None]))
    assert norm == pytest.approx(1.0, rel=1e-4)
