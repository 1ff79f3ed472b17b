"""`maetok` with instruments, for the multi-process tests (tests/train/test_distributed.py).

Run as `torchrun --standalone --nproc_per_node=2 tests/train/ddp_probe.py train-tokenizer ...`:
the same `maetok.cli.main` as `python -m maetok`, with probes installed first. Environment:

  PROBE_DIR        each rank writes rank<r>.json there at exit: the dataset indices of every
                   step's batch, the random draws the real code made on this rank (stage-1 mask
                   ratios, flow-matching times t) and every file-system write under PROBE_WATCH.
                   A tokenizer run with a GAN also writes disc_rank<r>.safetensors: the
                   discriminator (heads, backbone, LeCAM EMAs) as the first training step got it
                   (`first.*`) and as training left it (`last.*`).
  PROBE_WATCH      the directory whose writes are recorded (the job's outputs and checkpoints).
  PROBE_INVARIANT  "1": after the real draw, replace the masks (tokenizer) and t, eps (generator)
                   by draws that do not depend on the number of processes: one draw for the whole
                   global batch of the step, from a generator seeded by the step, sliced to this
                   rank's rows. One and two processes must then train the same weights.

`install()` also serves the single-process reference run inside the test process.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from maetok.models import tokenizer as tok_model
from maetok.train import generator as gen_train
from maetok.train import tokenizer as tok_train
from maetok.transport import Transport

WRITE_EVENTS = {"open", "os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.chmod"}


class Probe:
    """Records per-rank draws and batches; optionally makes the draws world-size invariant."""

    def __init__(self, rank: int, world: int, invariant: bool):
        self.rank, self.world, self.invariant = rank, world, invariant
        self.record = {"rank": rank, "world": world, "indices": [], "mask_ratios": [], "masked_rows": [],
                       "t": [], "writes": []}
        self.mask_calls = self.loss_calls = 0
        self.loss_fn, self.disc_first = None, None

    def _rows(self, n: int) -> slice:
        return slice(self.rank * n, (self.rank + 1) * n)

    # tokenizer: index_stream and the stage-1 mask ------------------------------------------
    def index_stream(self, original):
        def wrapped(*args, **kwargs):
            for idx in original(*args, **kwargs):
                self.record["indices"].append(idx.tolist())
                yield idx
        return wrapped

    def sample_mask_ratio(self, original):
        def wrapped(*args, **kwargs):
            ratio = original(*args, **kwargs)
            if kwargs.get("generator") is None:   # a draw of the real code (not of the probe below)
                self.record["mask_ratios"].append(ratio)
            return ratio
        return wrapped

    def sample_mask(self, original):
        def wrapped(model, x, mask_ratio=None, generator=None):
            mask = original(model, x, mask_ratio, generator)
            if mask is None or mask_ratio is not None or not model.training:
                return mask
            self.record["masked_rows"].append(mask.sum(1).tolist())
            if self.invariant:
                g = torch.Generator().manual_seed(10_000 + self.mask_calls)
                ratio = tok_model.sample_mask_ratio(model.mask_ratio_low, model.mask_ratio_high,
                                                    model.mask_ratio_dist, generator=g)
                n = len(x)
                mask = tok_model.random_masking(n * self.world, mask.shape[1], ratio, generator=g)[self._rows(n)]
            self.mask_calls += 1
            return mask.to(x.device)
        return wrapped

    # tokenizer: the discriminator the training steps use -------------------------------------
    def train_step(self, original):
        def wrapped(model, ema, loss_fn, *args, **kwargs):
            if loss_fn.discriminator is not None and self.loss_fn is None:
                self.loss_fn, self.disc_first = loss_fn, disc_state(loss_fn)
            return original(model, ema, loss_fn, *args, **kwargs)
        return wrapped

    def save_disc(self, path: Path) -> None:
        if self.loss_fn is not None:
            save_file({**{f"first.{k}": v for k, v in self.disc_first.items()},
                       **{f"last.{k}": v for k, v in disc_state(self.loss_fn).items()}}, str(path))

    # generator: flow-matching t and eps -------------------------------------------------------
    def training_losses(self, original):
        def wrapped(transport, model, x, model_kwargs=None, t=None, eps=None):
            t = transport.sample_time(x.shape[0], device=x.device) if t is None else t
            eps = torch.randn_like(x) if eps is None else eps
            self.record["t"].append(t.tolist())
            if self.invariant:
                g = torch.Generator().manual_seed(20_000 + self.loss_calls)
                n = len(x)
                t = transport.sample_time(n * self.world, generator=g)[self._rows(n)].to(x.device)
                eps = torch.randn((n * self.world, *x.shape[1:]), generator=g)[self._rows(n)].to(x.device)
            self.loss_calls += 1
            return original(transport, model, x, model_kwargs, t=t, eps=eps)
        return wrapped


def disc_state(loss_fn) -> dict[str, torch.Tensor]:
    """A copy of the discriminator's parameters and buffers (frozen backbone included) and LeCAM EMAs."""
    state = {**loss_fn.discriminator.state_dict(), **{f"lecam.{k}": v for k, v in loss_fn.lecam.state_dict().items()}}
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def install(rank: int = 0, world: int = 1, invariant: bool = False, setattr_=setattr) -> Probe:
    """Install the probes with `setattr_` (pytest's monkeypatch.setattr undoes them after a test)."""
    probe = Probe(rank, world, invariant)
    for module in (tok_train, gen_train):
        setattr_(module, "index_stream", probe.index_stream(module.index_stream))
    setattr_(tok_model, "sample_mask_ratio", probe.sample_mask_ratio(tok_model.sample_mask_ratio))
    setattr_(tok_model.MAETok, "sample_mask", probe.sample_mask(tok_model.MAETok.sample_mask))
    setattr_(Transport, "training_losses", probe.training_losses(Transport.training_losses))
    setattr_(tok_train, "train_step", probe.train_step(tok_train.train_step))
    return probe


def _audit_writes(probe: Probe, watch: str):
    """An audit hook recording file-system writes under `watch` (Python-level calls; the Rust and C++
    writers of safetensors and torch.save only ever write inside temporary files/dirs made here)."""
    def hook(event, args):
        if event not in WRITE_EVENTS or not args:
            return
        if event == "open" and not _writes(args):
            return
        target = args[1] if event == "os.rename" else args[0]   # a rename writes its destination
        path = os.fsdecode(target) if isinstance(target, (str, bytes, os.PathLike)) else ""
        if path.startswith(watch):
            probe.record["writes"].append([event, path])
    return hook


def _writes(args) -> bool:
    mode, flags = (list(args) + [None, None])[1:3]
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def main() -> int:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    probe = install(rank, world, os.environ.get("PROBE_INVARIANT") == "1")
    out = Path(os.environ["PROBE_DIR"]) / f"rank{rank}.json"
    sys.addaudithook(_audit_writes(probe, os.environ["PROBE_WATCH"]))
    atexit.register(lambda: out.write_text(json.dumps(probe.record)))
    atexit.register(lambda: probe.save_disc(out.with_name(f"disc_rank{rank}.safetensors")))
    from maetok.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
