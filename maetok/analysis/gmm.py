"""Gaussian-mixture fitting of tokenizer latents (paper §2, Fig. 2a; App. B.3).

App. B.3 recipe, one step per function:
  (1) flatten (N, H, C) -> (N, H*C)                        `flatten`
  (2) PCA to a fixed dimension (the paper picks the one     `fit_pca`, `dim_for_variance`
      reaching > 90% explained variance)
  (3) standardise each PCA coordinate                       inside `fit_gmm_nll`
  (4) fit a GMM for each number of components K and report  `fit_gmm_nll`
      the negative log-likelihood (NLL)

Two EM backends share one initialisation (`kmeans_init`), so they agree to numerical precision:
scikit-learn's `GaussianMixture` for small data, and `TorchGMM`, a mini-batched EM that runs on
CUDA for paper scale (the paper fits all of ImageNet, 1.28M latents, K up to 200; App. B.3).
NLL is the mean negative log-likelihood per sample, in nats, in the standardised PCA space; BIC
is computed on the training split as in scikit-learn.
"""

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

COVARIANCE_TYPES = ("diag", "full")
BACKENDS = ("sklearn", "torch")
INIT_METHODS = ("kmeans", "kmeans++")


def flatten(x) -> np.ndarray:
    """(N, ...) -> (N, D) view; memory-mapped arrays stay memory-mapped (App. B.3 step 1)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)  # no copy: a np.memmap keeps reading from disk
    return x.reshape(len(x), -1)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- PCA


@dataclass(frozen=True)
class PCA:
    """Principal axes of a data set. components: (D, D), rows sorted by decreasing variance."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (D, D)
    explained_variance: np.ndarray  # (D,)

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        total = self.explained_variance.sum()
        return self.explained_variance / total if total > 0 else np.zeros_like(self.explained_variance)

    def transform(self, x, dim: int, batch_size: int = 65536) -> np.ndarray:
        """x: (N, D) -> (N, dim) float64 coordinates on the first `dim` principal axes."""
        x = flatten(x)
        w = self.components[:dim].T  # (D, dim)
        out = np.empty((len(x), dim), dtype=np.float64)
        for i in range(0, len(x), batch_size):
            out[i : i + batch_size] = (np.asarray(x[i : i + batch_size], np.float64) - self.mean) @ w
        return out


def fit_pca(x, batch_size: int = 65536) -> PCA:
    """Exact PCA from the (D, D) covariance, accumulated in float64 over batches so a
    memory-mapped (1.28M, H*C) latent cache never has to sit in memory at once."""
    x = flatten(x)
    n, d = x.shape
    if n < 2:
        raise ValueError("PCA needs at least 2 samples")
    s = np.zeros(d)
    ss = np.zeros((d, d))
    for i in range(0, n, batch_size):
        xb = np.asarray(x[i : i + batch_size], np.float64)
        s += xb.sum(0)
        ss += xb.T @ xb
    mean = s / n
    cov = (ss - n * np.outer(mean, mean)) / (n - 1)
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order].T
    # Deterministic sign: the largest-magnitude entry of every axis is positive.
    signs = np.sign(evecs[np.arange(d), np.abs(evecs).argmax(1)])
    evecs *= np.where(signs == 0, 1.0, signs)[:, None]
    return PCA(mean=mean, components=evecs, explained_variance=evals)


def dim_for_variance(explained_variance_ratio: np.ndarray, threshold: float = 0.9) -> int:
    """Smallest number of leading components whose explained variance is >= threshold."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    cum = np.cumsum(explained_variance_ratio)
    # The 1e-12 slack only absorbs round-off when the threshold is hit exactly.
    return int(min(np.searchsorted(cum, threshold - 1e-12) + 1, len(cum)))


def pca_dim_for_variance(x, threshold: float = 0.9) -> int:
    """PCA dimension reaching `threshold` explained variance on x: (N, ...) (App. B.3 step 2)."""
    return dim_for_variance(fit_pca(x).explained_variance_ratio, threshold)


# ----------------------------------------------------------------------------- shared init


@dataclass(frozen=True)
class GMMParams:
    """weights: (K,), means: (K, D), covariances: (K, D) for diag or (K, D, D) for full."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    covariance: str

    def precisions(self) -> np.ndarray:
        if self.covariance == "diag":
            return 1.0 / self.covariances
        return np.linalg.inv(self.covariances)


def _sufficient_stats(x: torch.Tensor, resp: torch.Tensor, covariance: str):
    """x: (B, D), resp: (B, K) -> sum_n r_nk (K,), sum_n r_nk x_n (K, D), and the second
    moments sum_n r_nk x_n^2 (K, D) for diag or sum_n r_nk x_n x_n^T (K, D, D) for full,
    all float64. Full needs a (K, B, D) temporary: size the batch accordingly."""
    nk = resp.sum(0, dtype=torch.float64)
    sx = (resp.T @ x).double()
    if covariance == "diag":
        sxx = (resp.T @ (x * x)).double()
    else:
        sxx = ((resp.T[:, :, None] * x[None]).transpose(1, 2) @ x).double()
    return nk, sx, sxx


def _params_from_stats(nk, sx, sxx, n: int, covariance: str, reg_covar: float):
    """M-step from accumulated moments, as scikit-learn's `_estimate_gaussian_parameters`
    (same 10*eps guard against empty components, same reg_covar on the diagonal)."""
    nk = nk + 10 * torch.finfo(torch.float64).eps
    means = sx / nk[:, None]
    if covariance == "diag":
        cov = sxx / nk[:, None] - means**2 + reg_covar
    else:
        cov = sxx / nk[:, None, None] - means[:, :, None] * means[:, None, :]
        cov = (cov + cov.transpose(1, 2)) / 2
        cov = cov + reg_covar * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return nk / n, means, cov


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B, D), (K, D) -> (B, K) squared Euclidean distances."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)).clamp_min_(0)


def _kmeans_plusplus(x: torch.Tensor, k: int, gen: torch.Generator, batch_size: int):
    """D^2 seeding (Arthur & Vassilvitskii, 2007); the random draws come from a CPU
    generator so the seeds are identical on CPU and CUDA."""
    n = len(x)
    idx = [int(torch.randint(n, (1,), generator=gen))]
    d2 = torch.cat([_sq_dists(x[i : i + batch_size], x[idx]) for i in range(0, n, batch_size)])[:, 0]
    for _ in range(1, k):
        cum = torch.cumsum(d2.double(), 0)
        if cum[-1] <= 0:  # fewer distinct points than components
            nxt = int(torch.randint(n, (1,), generator=gen))
        else:
            u = float(torch.rand((1,), generator=gen, dtype=torch.float64)) * float(cum[-1])
            nxt = min(int(torch.searchsorted(cum, torch.tensor([u], dtype=cum.dtype, device=cum.device))), n - 1)
        idx.append(nxt)
        new = torch.cat([_sq_dists(x[i : i + batch_size], x[nxt : nxt + 1]) for i in range(0, n, batch_size)])
        d2 = torch.minimum(d2, new[:, 0])
    return x[idx].clone()


def _assign(x: torch.Tensor, c: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([_sq_dists(x[i : i + batch_size], c).argmin(1) for i in range(0, len(x), batch_size)])


def kmeans_init(
    x,
    k: int,
    covariance: str = "diag",
    *,
    seed: int = 0,
    method: str = "kmeans",
    kmeans_iter: int = 100,
    reg_covar: float = 1e-6,
    device=None,
    batch_size: int = 4096,
) -> GMMParams:
    """Initial GMM parameters from a hard clustering, as scikit-learn's init_params="kmeans":
    method="kmeans++" uses the seeding only, "kmeans" adds Lloyd iterations until the
    assignment stops changing (or kmeans_iter). Weights, means and covariances are those of
    the clusters. x: (N, D) float64."""
    if method not in INIT_METHODS:
        raise ValueError(f"method must be one of {INIT_METHODS}, got {method!r}")
    device = torch.device(device) if device is not None else _default_device()
    xt = torch.as_tensor(flatten(x), dtype=torch.float64, device=device)
    gen = torch.Generator().manual_seed(seed)
    centers = _kmeans_plusplus(xt, k, gen, batch_size)
    labels = _assign(xt, centers, batch_size)
    if method == "kmeans":
        for _ in range(kmeans_iter):
            # One-hot matmuls rather than index_add_, whose CUDA atomics make float sums
            # depend on scheduling.
            counts = torch.zeros(k, dtype=torch.float64, device=device)
            sums = torch.zeros_like(centers)
            for i in range(0, len(xt), batch_size):
                onehot = torch.nn.functional.one_hot(labels[i : i + batch_size], k).to(xt.dtype)
                counts += onehot.sum(0)
                sums += onehot.T @ xt[i : i + batch_size]
            keep = counts == 0  # an empty cluster keeps its centre
            centers = torch.where(keep[:, None], centers, sums / counts.clamp_min(1)[:, None])
            new = _assign(xt, centers, batch_size)
            if torch.equal(new, labels):
                break
            labels = new
    nk = torch.zeros(k, dtype=torch.float64, device=device)
    sx = torch.zeros(k, xt.shape[1], dtype=torch.float64, device=device)
    sxx = torch.zeros((k, xt.shape[1]) if covariance == "diag" else (k, xt.shape[1], xt.shape[1]),
                      dtype=torch.float64, device=device)
    for i in range(0, len(xt), batch_size):
        resp = torch.nn.functional.one_hot(labels[i : i + batch_size], k).to(xt.dtype)
        a, b, c = _sufficient_stats(xt[i : i + batch_size], resp, covariance)
        nk += a
        sx += b
        sxx += c
    w, m, cov = _params_from_stats(nk, sx, sxx, len(xt), covariance, reg_covar)
    return GMMParams(w.cpu().numpy(), m.cpu().numpy(), cov.cpu().numpy(), covariance)


# ----------------------------------------------------------------------------- torch EM


class TorchGMM:
    """Gaussian mixture fitted by EM with a mini-batched E-step, on CUDA when available.

    The EM loop mirrors scikit-learn's (`BaseMixture.fit_predict`): each iteration runs an
    E-step at the current parameters, accumulating the mean log-likelihood and sufficient
    statistics over batches, then an M-step; it stops when the mean log-likelihood changes
    by less than `tol`. Only (batch, K[, D]) temporaries are held, so 1.28M x 200 x K=200
    fits in GPU memory (full covariance: batch_size * K * D * 8 bytes per temporary).
    Log-densities, log-sum-exp and statistics are float64 (`dtype` may lower the matmuls
    to float32 on GPUs with slow float64; the accumulation stays float64).
    """

    def __init__(
        self,
        n_components: int,
        covariance: str = "diag",
        *,
        max_iter: int = 100,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        init: str = "kmeans",
        seed: int = 0,
        batch_size: int = 4096,
        device=None,
        dtype: torch.dtype = torch.float64,
    ):
        if covariance not in COVARIANCE_TYPES:
            raise ValueError(f"covariance must be one of {COVARIANCE_TYPES}, got {covariance!r}")
        self.n_components = n_components
        self.covariance = covariance
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.init = init
        self.seed = seed
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else _default_device()
        self.dtype = dtype

    # -- parameters held on device: log weights, means, and a precision factor
    def _set_params(self, weights, means, covariances):
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=self.device)
        w, mu, cov = t(weights), t(means), t(covariances)
        self._log_w = torch.log(w)
        self._mu = mu
        if self.covariance == "diag":
            self._prec = 1.0 / cov  # (K, D)
            self._log_det = -0.5 * torch.log(cov).sum(1)  # log |Sigma|^-1/2
        else:
            # Precision Cholesky factor P with P P^T = Sigma^-1, as scikit-learn.
            chol = torch.linalg.cholesky(cov)
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
            self._prec_chol = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(1, 2)
            self._log_det = torch.log(torch.diagonal(self._prec_chol, dim1=1, dim2=2)).sum(1)
        self.weights_ = w.cpu().numpy()
        self.means_ = mu.cpu().numpy()
        self.covariances_ = cov.cpu().numpy()

    def _weighted_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D) -> log w_k + log N(x | mu_k, Sigma_k): (B, K), float64."""
        d = x.shape[1]
        if self.covariance == "diag":
            prec, mu = self._prec.to(self.dtype), self._mu.to(self.dtype)
            maha = (x * x) @ prec.T - 2 * x @ (mu * prec).T + (mu * mu * prec).sum(1)
        else:
            p = self._prec_chol.to(self.dtype)  # (K, D, D)
            y = x[None] @ p - (self._mu.to(self.dtype)[:, None, :] @ p)  # (K, B, D)
            maha = (y * y).sum(-1).T  # (B, K)
        return -0.5 * (d * math.log(2 * math.pi) + maha.double()) + self._log_det + self._log_w

    def _to_tensor(self, x) -> torch.Tensor:
        x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        return x.to(device=self.device, dtype=self.dtype)

    def fit(self, x, init: GMMParams | None = None) -> "TorchGMM":
        """x: (N, D). init: starting parameters (default: `kmeans_init` with this seed)."""
        if init is None:
            init = kmeans_init(x, self.n_components, self.covariance, seed=self.seed, method=self.init,
                               reg_covar=self.reg_covar, device=self.device, batch_size=self.batch_size)
        self._set_params(init.weights, init.means, init.covariances)
        xt = self._to_tensor(x)
        n, d = xt.shape
        k = self.n_components
        lower_bound = -math.inf
        self.converged_ = False
        self.n_iter_ = 0
        for it in range(1, self.max_iter + 1):
            prev = lower_bound
            nk = torch.zeros(k, dtype=torch.float64, device=self.device)
            sx = torch.zeros(k, d, dtype=torch.float64, device=self.device)
            sxx = torch.zeros((k, d) if self.covariance == "diag" else (k, d, d),
                              dtype=torch.float64, device=self.device)
            total = 0.0
            for i in range(0, n, self.batch_size):
                xb = xt[i : i + self.batch_size]
                lp = self._weighted_log_prob(xb)
                norm = torch.logsumexp(lp, 1)  # (B,)
                total += float(norm.sum())
                resp = torch.exp(lp - norm[:, None]).to(self.dtype)
                a, b, c = _sufficient_stats(xb, resp, self.covariance)
                nk += a
                sx += b
                sxx += c
            self._set_params(*_params_from_stats(nk, sx, sxx, n, self.covariance, self.reg_covar))
            lower_bound = total / n
            self.n_iter_ = it
            if abs(lower_bound - prev) < self.tol:
                self.converged_ = True
                break
        self.lower_bound_ = lower_bound
        return self

    @torch.no_grad()
    def score_samples(self, x) -> np.ndarray:
        """Per-sample log-likelihood, (N,) float64."""
        xt = self._to_tensor(x)
        out = [torch.logsumexp(self._weighted_log_prob(xt[i : i + self.batch_size]), 1)
               for i in range(0, len(xt), self.batch_size)]
        return torch.cat(out).cpu().numpy()

    def score(self, x) -> float:
        """Mean per-sample log-likelihood."""
        return float(self.score_samples(x).mean())

    def n_parameters(self) -> int:
        k, d = self.means_.shape
        cov = k * d if self.covariance == "diag" else k * d * (d + 1) // 2
        return cov + k * d + k - 1

    def bic(self, x) -> float:
        """Bayesian information criterion, with scikit-learn's parameter count."""
        n = len(x)
        return -2 * self.score(x) * n + self.n_parameters() * math.log(n)


# ----------------------------------------------------------------------------- entry point


def _fit_one(ztr, zho, k, covariance, backend, init, *, max_iter, tol, reg_covar, seed, batch_size, device):
    """Fit one K; returns (nll_heldout, nll_train, bic, converged, n_iter)."""
    if backend == "torch":
        gm = TorchGMM(k, covariance, max_iter=max_iter, tol=tol, reg_covar=reg_covar, seed=seed,
                      batch_size=batch_size, device=device).fit(ztr, init=init)
    else:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(k, covariance_type=covariance, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                             random_state=seed, weights_init=init.weights, means_init=init.means,
                             precisions_init=init.precisions())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported via "converged"
            gm.fit(ztr)
    return -gm.score(zho), -gm.score(ztr), gm.bic(ztr), bool(gm.converged_), int(gm.n_iter_)


def fit_gmm_nll(
    train,
    heldout,
    n_components_list: Sequence[int] = (1, 5, 10, 20, 50, 100, 200),
    *,
    pca_dim: int | None = None,
    covariance: str = "diag",
    backend: str = "sklearn",
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: str = "kmeans",
    batch_size: int = 4096,
    device=None,
) -> dict:
    """GMM fit of tokenizer latents (App. B.3): flatten -> PCA -> standardise -> GMM per K.

    train: (N, ...) and heldout: (M, ...) latents (numpy, memory-mapped numpy or torch).
    PCA and standardisation are fitted on train only. pca_dim: the common dimension used to
    compare tokenizers (App. B.3 fixes one for all latent spaces); None uses this
    tokenizer's own 90%-variance dimension, which is always reported as "own_pca_dim_90".

    Returns {"pca_dim", "own_pca_dim_90", "explained_variance" (fraction at pca_dim),
    "input_dim", "n_train", "n_heldout", "covariance", "backend",
    "results": [{"k", "nll_heldout", "nll_train", "bic", "converged", "n_iter"}, ...]}.
    """
    if covariance not in COVARIANCE_TYPES:
        raise ValueError(f"covariance must be one of {COVARIANCE_TYPES}, got {covariance!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    xtr, xho = flatten(train), flatten(heldout)
    if xtr.shape[1] != xho.shape[1]:
        raise ValueError(f"train and heldout dims differ: {xtr.shape[1]} vs {xho.shape[1]}")
    pca = fit_pca(xtr)
    ratio = pca.explained_variance_ratio
    own = dim_for_variance(ratio, 0.9)
    dim = own if pca_dim is None else int(pca_dim)
    if not 1 <= dim <= xtr.shape[1]:
        raise ValueError(f"pca_dim must be in [1, {xtr.shape[1]}], got {dim}")
    ztr, zho = pca.transform(xtr, dim), pca.transform(xho, dim)
    mu, sd = ztr.mean(0), ztr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    ztr, zho = (ztr - mu) / sd, (zho - mu) / sd
    device = torch.device(device) if device is not None else _default_device()
    results = []
    for k in n_components_list:
        init_params = kmeans_init(ztr, int(k), covariance, seed=seed, method=init, reg_covar=reg_covar,
                                  device=device, batch_size=batch_size)
        nll_ho, nll_tr, bic, converged, n_iter = _fit_one(
            ztr, zho, int(k), covariance, backend, init_params, max_iter=max_iter, tol=tol,
            reg_covar=reg_covar, seed=seed, batch_size=batch_size, device=device)
        results.append({"k": int(k), "nll_heldout": float(nll_ho), "nll_train": float(nll_tr),
                        "bic": float(bic), "converged": converged, "n_iter": n_iter})
    return {
        "pca_dim": dim,
        "own_pca_dim_90": own,
        "explained_variance": float(ratio[:dim].sum()),
        "input_dim": int(xtr.shape[1]),
        "n_train": int(len(xtr)),
        "n_heldout": int(len(xho)),
        "covariance": covariance,
        "backend": backend,
        "results": results,
    }
