import math

import pytest
import torch

from maetok.models.sit import SiT_models, classifier_free_guidance
from maetok.transport import (
    IndexedNoise,
    PathType,
    TimeSampling,
    Transport,
    balanced_labels,
    initial_noise,
    make_path,
    null_labels,
)
from maetok.transport.path import expand_t

PATHS = list(PathType)
DTYPE = torch.float64


def _data_noise_t(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 3, generator=g, dtype=DTYPE)
    eps = torch.randn(n, 4, 3, generator=g, dtype=DTYPE)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=DTYPE)
    return x, eps, t


def gaussian_velocity(path, mu, std):
    """Exact E[v | x_t] when data ~ N(mu, std^2) and eps ~ N(0, 1), elementwise."""
    def model_fn(x_t, t, **_):
        t = expand_t(t, x_t)
        a, s = path.alpha(t), path.sigma(t)
        var = a * a * std * std + s * s
        resid = x_t - a * mu
        x_mean = mu + a * std * std * resid / var
        eps_mean = s * resid / var
        return path.d_alpha(t) * x_mean + path.d_sigma(t) * eps_mean
    return model_fn


# --- path math ---------------------------------------------------------------------------
@pytest.mark.parametrize("path_type", PATHS)
def test_path_endpoints(path_type):
    path = make_path(path_type)
    x, eps, _ = _data_noise_t()
    zeros, ones = torch.zeros(6, dtype=DTYPE), torch.ones(6, dtype=DTYPE)
    torch.testing.assert_close(path.interpolate(x, eps, zeros), x)  # t = 0: data
    torch.testing.assert_close(path.interpolate(x, eps, ones), eps)  # t = 1: noise


@pytest.mark.parametrize("path_type", PATHS)
def test_velocity_is_time_derivative(path_type):
    path = make_path(path_type)
    x, eps, t = _data_noise_t()
    h = 1e-6
    fd = (path.interpolate(x, eps, t + h) - path.interpolate(x, eps, t - h)) / (2 * h)
    torch.testing.assert_close(path.velocity(x, eps, t), fd, atol=1e-7, rtol=1e-7)


def test_linear_velocity_is_noise_minus_data():
    path = make_path("linear")
    x, eps, t = _data_noise_t()
    torch.testing.assert_close(path.velocity(x, eps, t), eps - x)


@pytest.mark.parametrize("path_type", PATHS)
def test_conversions_invert(path_type):
    path = make_path(path_type)
    x, eps, t = _data_noise_t()
    x_t, v = path.interpolate(x, eps, t), path.velocity(x, eps, t)
    torch.testing.assert_close(path.velocity_to_data(v, x_t, t), x)
    torch.testing.assert_close(path.velocity_to_noise(v, x_t, t), eps)
    torch.testing.assert_close(path.noise_to_velocity(eps, x_t, t), v)
    torch.testing.assert_close(path.data_to_velocity(x, x_t, t), v)
    score = path.velocity_to_score(v, x_t, t)
    torch.testing.assert_close(score, -eps / expand_t(path.sigma(t), x))
    torch.testing.assert_close(path.score_to_velocity(score, x_t, t), v)


def test_linear_score_matches_official_formula():
    """Spec §5.5: s = ((t - 1) v - x_t) / t on the linear path."""
    path = make_path("linear")
    x, eps, t = _data_noise_t()
    x_t, v = path.interpolate(x, eps, t), path.velocity(x, eps, t)
    tt = expand_t(t, x)
    torch.testing.assert_close(path.velocity_to_score(v, x_t, t), ((tt - 1) * v - x_t) / tt)
    torch.testing.assert_close(path.diffusion(t), 2 * t)


# --- training ----------------------------------------------------------------------------
def test_enums_are_strict():
    assert Transport("cosine", "logit_normal").path_type is PathType.COSINE
    with pytest.raises(ValueError):
        Transport(path_type="Linear")
    with pytest.raises(ValueError):
        Transport(time_sampling="lognormal")


@pytest.mark.parametrize("path_type", PATHS)
def test_time_sampling(path_type):
    torch.manual_seed(0)
    uniform = Transport(path_type).sample_time(20000)
    assert uniform.min() >= 0 and uniform.max() < 1
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.01)
    t = Transport(path_type, TimeSampling.LOGIT_NORMAL, time_mean=0.5, time_std=0.8).sample_time(20000)
    path = make_path(path_type)
    n = torch.log(path.sigma(t) / path.alpha(t))  # log noise-to-signal ratio ~ N(0.5, 0.8^2)
    assert n.mean().item() == pytest.approx(0.5, abs=0.03)
    assert n.std().item() == pytest.approx(0.8, abs=0.03)
    if path_type is PathType.LINEAR:  # logit-normal exactly
        torch.testing.assert_close(torch.logit(t), n, atol=1e-4, rtol=1e-4)


def test_training_loss_terms():
    transport = Transport()
    x, eps, t = (a.float() for a in _data_noise_t())
    model = lambda x_t, t, y: y * x_t
    terms = transport.training_losses(model, x, {"y": 0.5}, t=t, eps=eps)
    x_t = (1 - expand_t(t, x)) * x + expand_t(t, x) * eps
    mse = (0.5 * x_t - (eps - x)).pow(2).mean()
    torch.testing.assert_close(terms["mse"], mse)
    torch.testing.assert_close(terms["loss"], mse)
    assert terms["cos"].item() == 0.0


def test_lightningdit_reports_cos_term_and_sit_does_not():
    x = torch.randn(4, 16, 8)
    y = torch.randint(0, 10, (4,))
    kw = {"in_channels": 8, "num_tokens": 16, "num_classes": 10}
    sit = SiT_models["SiT-T/1"](**kw)
    lightning = SiT_models["LightningDiT-T/1"](**kw)
    with torch.no_grad():  # leave the all-zero adaLN-Zero start so cos is defined
        for p in lightning.final_layer.parameters():
            p.normal_(std=0.05)
    sit_terms = Transport(cos_weight=0.0).training_losses(sit, x, {"y": y})
    l_terms = Transport(cos_weight=0.5).training_losses(lightning, x, {"y": y})
    assert sit_terms["cos"].item() == 0.0
    torch.testing.assert_close(sit_terms["loss"], sit_terms["mse"])
    assert 0.0 < l_terms["cos"].item() < 2.0
    torch.testing.assert_close(l_terms["loss"], l_terms["mse"] + 0.5 * l_terms["cos"])
    l_terms["loss"].backward()
    assert lightning.blocks[0].attn.q_norm.weight.grad is not None


def test_oracle_velocity_has_minimal_loss():
    """The exact conditional expectation beats a perturbed field (sanity of the target)."""
    torch.manual_seed(0)
    transport = Transport()
    x = 2.0 + 0.5 * torch.randn(20000, 1, 1)
    t, eps = transport.sample_time(20000), torch.randn_like(x)
    oracle = gaussian_velocity(transport.path, 2.0, 0.5)
    loss = transport.training_losses(oracle, x, t=t, eps=eps)["loss"]
    worse = transport.training_losses(lambda x_t, t: oracle(x_t, t) + 0.2, x, t=t, eps=eps)["loss"]
    assert loss < worse - 0.03


# --- samplers ----------------------------------------------------------------------------
@pytest.mark.parametrize("path_type", PATHS)
@pytest.mark.parametrize("mode", ["ode", "sde"])
def test_samplers_reach_the_data_distribution(path_type, mode):
    mu, std = 2.0, 0.5
    transport = Transport(path_type)
    sample_fn = transport.sample_ode(100) if mode == "ode" else transport.sample_sde(100)
    z = initial_noise(range(4000), (2, 2), seed=0)  # 16k scalars
    out = sample_fn(z, gaussian_velocity(transport.path, mu, std))
    assert out.dtype == z.dtype and out.shape == z.shape
    assert out.mean().item() == pytest.approx(mu, abs=0.03)
    assert out.std().item() == pytest.approx(std, abs=0.03)


def test_ode_point_mass_is_exact_on_linear_path():
    """Straight-line trajectories: Euler lands on the point mass even with 3 steps."""
    transport = Transport()
    z = torch.randn(8, 2, 3)
    out = transport.sample_ode(3)(z, gaussian_velocity(transport.path, 1.5, 0.0))
    torch.testing.assert_close(out, torch.full_like(z, 1.5))


def test_sampler_grids_and_model_calls():
    seen = {"ode": [], "sde": []}

    def recorder(kind):
        def model_fn(x, t, y):
            assert x.dtype == torch.float32 and t.shape == (x.shape[0],) and y == "label"
            seen[kind].append(t[0].item())
            return torch.zeros_like(x)
        return model_fn

    transport = Transport()
    z = torch.randn(2, 3, 4)
    transport.sample_ode(4)(z, recorder("ode"), y="label")
    transport.sample_sde(5)(z, recorder("sde"), y="label")
    assert seen["ode"] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert seen["sde"] == pytest.approx([1.0, 0.76, 0.52, 0.28, 0.04])  # then a step to 0


def test_sampler_with_cfg_interval():
    """Guidance through model_fn: a label-dependent constant field, CFG only for t <= 0.5.

    v_cond = -1, v_null = 0 (data end 'above' the noise end), scale 3, Euler 4 steps
    from t = 1: steps at t = 1, 0.75 unguided (-1 each), at 0.5, 0.25 guided (-3 each);
    x_0 = z + 0.25 * (1 + 1 + 3 + 3)."""
    def forward(x, t, y):
        return -(y != 10).to(x.dtype).reshape(-1, 1).expand_as(x)

    def model_fn(x, t, y):
        return classifier_free_guidance(forward, x, t, y, 10, 3.0, (0.0, 0.5))

    z = torch.zeros(3, 2)
    out = Transport().sample_ode(4)(z, model_fn, y=torch.tensor([1, 2, 3]))
    torch.testing.assert_close(out, torch.full_like(z, 2.0))


# --- labels and per-index noise ----------------------------------------------------------
def test_initial_noise_is_per_index():
    full = initial_noise(range(10), (3, 2), seed=7)
    shards = torch.cat([initial_noise(range(5), (3, 2), seed=7),
                        initial_noise(torch.arange(5, 10), (3, 2), seed=7)])
    torch.testing.assert_close(full, shards, rtol=0, atol=0)
    assert full.shape == (10, 3, 2)
    assert not torch.equal(full, initial_noise(range(10), (3, 2), seed=8))
    assert not torch.equal(full[0], full[1])


def test_sde_sampling_is_shard_invariant_with_indexed_noise():
    transport = Transport()
    model_fn = gaussian_velocity(transport.path, 1.0, 0.3)
    sample_fn = transport.sample_sde(10)

    def run(indices):
        z = initial_noise(indices, (4,), seed=3)
        return sample_fn(z, model_fn, noise_fn=IndexedNoise(indices, seed=3, stream=1))

    full = run(list(range(10)))
    torch.testing.assert_close(full, torch.cat([run(list(range(5))), run(list(range(5, 10)))]),
                               rtol=0, atol=0)


def test_balanced_and_null_labels():
    labels = balanced_labels(50, 10)
    assert torch.bincount(labels, minlength=10).tolist() == [5] * 10
    torch.testing.assert_close(balanced_labels(50, 10)[20:35], torch.arange(20, 35) % 10)
    assert null_labels(4, 1000).tolist() == [1000] * 4


def test_cosine_logit_normal_matches_official_atan_form():
    """Official cosine path: sigma = exp(n), t = (2 / pi) atan(sigma) (the official MAETok SiT code)."""
    r = torch.tensor([0.1, 1.0, 5.0])
    torch.testing.assert_close(make_path("cosine").t_from_ratio(r), torch.atan(r) * 2 / math.pi)


def test_build_transport_follows_the_config():
    from maetok import config as C
    from maetok.transport import build_transport

    cfg = C.TransportConfig(path="cosine", time_sampling="logit_normal", time_mean=0.25, time_std=0.5,
                            cos_weight=0.1, conditional=True, class_dropout=0.1)
    t = build_transport(cfg)
    assert (t.path_type, t.time_sampling) == (PathType.COSINE, TimeSampling.LOGIT_NORMAL)
    assert (t.time_mean, t.time_std, t.cos_weight) == (0.25, 0.5, 0.1)
