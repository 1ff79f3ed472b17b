"""Linear probing of tokenizer latents (paper §4.3, Fig. 5a).

LP accuracy is the paper's proxy for how discriminative a latent space is. A linear
classifier on the flattened latents, trained with cross-entropy. As in MAE's linear probe
(He et al., 2022, which puts a non-affine BatchNorm before the head), features are
standardised with train-split statistics; the head starts at zero (the problem is convex,
so no random init is needed) and mini-batches are drawn from a seeded generator, so a run
is a pure function of its inputs and seed. Data are read batch by batch, so the latents can
be a memory-mapped (1.28M, H*C) numpy cache. For small data, optimizer="lbfgs" trains the
same model full-batch.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

OPTIMIZERS = ("adamw", "sgd", "lbfgs")


def _rows(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)  # a np.memmap stays on disk
    return x.reshape(len(x), -1)


def _feature_stats(x: np.ndarray, batch_size: int):
    """Per-feature mean and std over x, accumulated in float64 batch by batch."""
    s = np.zeros(x.shape[1])
    ss = np.zeros(x.shape[1])
    for i in range(0, len(x), batch_size):
        xb = np.asarray(x[i : i + batch_size], np.float64)
        s += xb.sum(0)
        ss += (xb * xb).sum(0)
    mean = s / len(x)
    std = np.sqrt(np.clip(ss / len(x) - mean**2, 0.0, None))
    return mean, np.where(std > 1e-8, std, 1.0)


class _Batches:
    """Reads rows of a (possibly memory-mapped) array as standardised float32 tensors."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std, device):
        self.x, self.y, self.device = x, y, device
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device)

    def get(self, idx: np.ndarray):
        idx = np.sort(idx)  # sequential reads from a memmap; order inside a batch is irrelevant
        xb = torch.as_tensor(np.asarray(self.x[idx], np.float32), device=self.device)
        yb = torch.as_tensor(np.asarray(self.y[idx], np.int64), device=self.device)
        return (xb - self.mean) / self.std, yb


@torch.no_grad()
def _evaluate(head: torch.nn.Linear, data: _Batches, batch_size: int):
    """Top-1 accuracy and mean cross-entropy over all rows."""
    n = len(data.x)
    correct, loss = 0, 0.0
    for i in range(0, n, batch_size):
        xb, yb = data.get(np.arange(i, min(i + batch_size, n)))
        logits = head(xb)
        correct += int((logits.argmax(1) == yb).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    return correct / n, loss / n


def _fit_lbfgs(head: torch.nn.Linear, train: _Batches, epochs: int, lr: float, weight_decay: float) -> None:
    """Full batch: `epochs` outer L-BFGS steps, weight_decay as an L2 penalty on the weights."""
    xb, yb = train.get(np.arange(len(train.x)))
    opt = torch.optim.LBFGS(head.parameters(), lr=lr, max_iter=20, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(xb), yb) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(epochs):
        opt.step(closure)


def _fit_minibatch(head: torch.nn.Linear, train: _Batches, optimizer: str, epochs: int, batch_size: int, lr: float,
                   weight_decay: float, seed: int) -> None:
    """AdamW or SGD (momentum 0.9) over seeded shuffles, cosine learning-rate decay over all steps."""
    if optimizer == "adamw":
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    n = len(train.x)
    total = epochs * math.ceil(n / batch_size)
    rng = np.random.default_rng(seed)
    step = 0
    for _ in range(epochs):
        perm = rng.permutation(n)
        for i in range(0, n, batch_size):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            xb, yb = train.get(perm[i : i + batch_size])
            loss = F.cross_entropy(head(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1


def linear_probe(
    train_x,
    train_y,
    val_x,
    val_y,
    *,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    standardize: bool = True,
    optimizer: str = "adamw",
    num_classes: int | None = None,
    device=None,
) -> dict:
    """Train a linear classifier on flattened latents and report top-1 accuracy.

    train_x: (N, ...), train_y: (N,) int labels; val_x: (M, ...), val_y: (M,).
    optimizer: "adamw" or "sgd" (momentum 0.9), mini-batch with a cosine learning-rate
    decay over epochs * ceil(N / batch_size) steps; or "lbfgs", full-batch (loads all of
    train_x; for small data), `epochs` outer L-BFGS steps with weight_decay as an L2 penalty.
    Returns {"train_acc", "val_acc", "train_loss", "val_loss", "n_train", "n_val",
    "input_dim", "num_classes", "epochs", "optimizer"} (accuracies are fractions in [0, 1]).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    xtr, xva = _rows(train_x), _rows(val_x)
    ytr, yva = np.asarray(train_y).reshape(-1), np.asarray(val_y).reshape(-1)
    if len(xtr) != len(ytr) or len(xva) != len(yva):
        raise ValueError("features and labels differ in length")
    if xtr.shape[1] != xva.shape[1]:
        raise ValueError(f"train and val dims differ: {xtr.shape[1]} vs {xva.shape[1]}")
    n, d = xtr.shape
    c = int(num_classes) if num_classes is not None else int(max(ytr.max(), yva.max())) + 1
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")

    if standardize:
        mean, std = _feature_stats(xtr, batch_size=max(batch_size, 65536))
    else:
        mean, std = np.zeros(d), np.ones(d)
    train, val = _Batches(xtr, ytr, mean, std, device), _Batches(xva, yva, mean, std, device)

    head = torch.nn.Linear(d, c).to(device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)

    if optimizer == "lbfgs":
        _fit_lbfgs(head, train, epochs, lr, weight_decay)
    else:
        _fit_minibatch(head, train, optimizer, epochs, batch_size, lr, weight_decay, seed)

    train_acc, train_loss = _evaluate(head, train, batch_size=max(batch_size, 4096))
    val_acc, val_loss = _evaluate(head, val, batch_size=max(batch_size, 4096))
    return {
        "train_acc": train_acc,
        "val_acc": val_acc,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "n_train": int(n),
        "n_val": int(len(xva)),
        "input_dim": int(d),
        "num_classes": c,
        "epochs": int(epochs),
        "optimizer": optimizer,
    }
