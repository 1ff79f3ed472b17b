"""GMM fitting of latents (App. B.3): mode counting, backend agreement, PCA dimension rule."""

import numpy as np
import pytest

from maetok.analysis.gmm import TorchGMM, fit_gmm_nll, fit_pca, kmeans_init, pca_dim_for_variance


def _mixture(n, k, d, sep, seed):
    """n samples from k unit-variance Gaussians in d dims whose centres are `sep` apart-ish."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).normal(size=(k, d)) * sep
    labels = rng.integers(k, size=n)
    return centers[labels] + rng.normal(size=(n, d)), labels


def test_nll_flattens_after_true_k_and_bic_picks_it():
    x, _ = _mixture(4000, 6, 8, sep=6.0, seed=0)
    ks = [1, 2, 3, 4, 5, 6, 8, 10]
    out = fit_gmm_nll(x[:3000], x[3000:], ks, pca_dim=8, covariance="diag", backend="sklearn", device="cpu")
    nll = {r["k"]: r["nll_heldout"] for r in out["results"]}
    bic = {r["k"]: r["bic"] for r in out["results"]}
    drop = nll[1] - nll[6]
    assert drop > 2.0
    assert all(nll[a] > nll[b] for a, b in zip(ks[:5], ks[1:6], strict=True))  # steep fall up to K=6
    assert all(abs(nll[k] - nll[6]) < 0.05 * drop for k in (8, 10))  # flat after it
    assert min(bic, key=bic.get) == 6
    assert out["pca_dim"] == 8 and out["input_dim"] == 8 and out["explained_variance"] == pytest.approx(1.0)
    assert all(r["converged"] for r in out["results"])


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_torch_and_sklearn_agree(covariance):
    x, _ = _mixture(1500, 4, 5, sep=2.5, seed=1)
    kw = dict(pca_dim=5, covariance=covariance, seed=3, device="cpu", tol=1e-4, max_iter=200)
    sk = fit_gmm_nll(x[:1000], x[1000:], [3, 6], backend="sklearn", **kw)
    th = fit_gmm_nll(x[:1000], x[1000:], [3, 6], backend="torch", **kw)
    for a, b in zip(sk["results"], th["results"], strict=True):
        assert b["nll_heldout"] == pytest.approx(a["nll_heldout"], rel=1e-2)
        assert b["bic"] == pytest.approx(a["bic"], rel=1e-2)
        assert abs(a["n_iter"] - b["n_iter"]) <= 1


def test_torch_gmm_minibatch_matches_full_batch():
    x, _ = _mixture(600, 3, 4, sep=3.0, seed=2)
    init = kmeans_init(x, 3, "full", seed=0, device="cpu")
    a = TorchGMM(3, "full", batch_size=10_000, device="cpu").fit(x, init=init)
    b = TorchGMM(3, "full", batch_size=64, device="cpu").fit(x, init=init)
    np.testing.assert_allclose(a.score_samples(x), b.score_samples(x), rtol=1e-9)
    assert a.n_iter_ == b.n_iter_


def _exact_spectrum(variances, n=500, seed=0):
    """Rotated data whose sample covariance has exactly the given eigenvalues."""
    rng = np.random.default_rng(seed)
    d = len(variances)
    z = rng.normal(size=(n, d))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)  # sample cov = I
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (z * np.sqrt(variances)) @ q.T + 5.0


def test_pca_dim_rule_on_known_spectrum():
    var = np.array([10.0, 5.0, 1.0] + [0.1] * 7)  # cumulative 0.599, 0.898, 0.958, ...
    x = _exact_spectrum(var)
    np.testing.assert_allclose(fit_pca(x).explained_variance, var, rtol=1e-8)
    assert pca_dim_for_variance(x, 0.9) == 3  # 0.898 is just short of 0.9
    assert pca_dim_for_variance(x, 0.85) == 2
    assert pca_dim_for_variance(x, 0.5) == 1
    assert pca_dim_for_variance(x, 1.0) == 10
    out = fit_gmm_nll(x, x[:50], [1], covariance="diag", device="cpu")
    assert out["own_pca_dim_90"] == out["pca_dim"] == 3
    assert out["explained_variance"] == pytest.approx(16 / 16.7)


def test_flattens_token_channel_latents():
    x, _ = _mixture(300, 2, 12, sep=4.0, seed=4)
    out = fit_gmm_nll(x[:200].reshape(200, 4, 3), x[200:].reshape(100, 4, 3), [1, 2], pca_dim=6,
                      device="cpu")
    assert out["input_dim"] == 12 and out["pca_dim"] == 6
    assert out["results"][1]["nll_heldout"] < out["results"][0]["nll_heldout"]
