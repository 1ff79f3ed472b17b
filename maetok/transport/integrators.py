"""Fixed-grid ODE / SDE steppers. They know no model and no path: the caller passes
callables `drift(x, t)` and `diffusion(t)` and a decreasing time grid (t = 1 noise ->
t = 0 data, see path.py). `t` reaches the callables as a 0-dim tensor of x's dtype."""

import itertools

import torch


def euler_ode(drift, x, t_grid):
    """Explicit Euler for dx/dt = drift(x, t) over t_grid: (N + 1,) -> N drift calls."""
    for t_cur, t_next in itertools.pairwise(t_grid):
        x = x + (t_next - t_cur) * drift(x, t_cur)
    return x


def euler_maruyama_sde(drift, diffusion, x, t_grid, noise_fn=torch.randn_like):
    """Euler-Maruyama for the reverse-time SDE dx = drift dt + sqrt(w(t)) dW over t_grid.

    dt < 0, so the noise increment is sqrt(w(t) |dt|) z with z = noise_fn(x) ~ N(0, I).
    The last step is deterministic (the mean of the update), as in the official sampler,
    which stops the stochastic part at a small t and jumps to 0.
    """
    steps = list(itertools.pairwise(t_grid))
    for i, (t_cur, t_next) in enumerate(steps):
        dt = t_next - t_cur
        x_mean = x + dt * drift(x, t_cur)
        if i == len(steps) - 1:
            return x_mean
        x = x_mean + torch.sqrt(diffusion(t_cur) * dt.abs()) * noise_fn(x)
    return x
