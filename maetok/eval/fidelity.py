"""FID / IS / precision / recall through torch-fidelity, shared by reconstruction and
generation metrics (paper Tables 1-6).

Feature networks:
- `standin` (tiny): the trained evaluator classifier, registered as a torch-fidelity
  feature extractor (`maetok.models.standins.register_evaluator`), for every metric.
- `inception` (paper): torch-fidelity's Inception-v3 for FID and IS, and VGG16 for
  precision/recall in a second call (torch-fidelity takes one weights path per call,
  and the two extractors need different files). Both weight files must already be in
  `<evaluation.torch_home>/hub/checkpoints/`; a missing file is an error naming it and
  where to get it, never a download.

Reference: the prepared train split (ADM's reference statistics are of the ImageNet
train set). Its features are cached once per dataset and feature network in `cache_dir`
through torch-fidelity's cache, under an `input2_cache_name` that includes the feature
network's weights hash, so a retrained stand-in evaluator never reuses stale statistics.
Precision/recall compare against a fixed, seeded subset of `prc_reference_size` train
images (ADM also uses a 10k reference batch for them; the full 1.28M set would make the
k-NN radii infeasible).

Deviation: the paper uses the ADM (TensorFlow) evaluation suite; torch-fidelity's
`inception-v3-compat` reproduces its Inception features, and its precision/recall is
Kynkäänniemi et al.'s as in ADM, but on VGG16 features (torch-fidelity's default) rather
than ADM's Inception pool features.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import numpy as np
import torch
import torch_fidelity

from maetok import config as C
from maetok.data import ImageDataset, load_manifest
from maetok.utils.io import sha256_file

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
METRICS = ("fid", "isc", "prc")


class FidelityError(RuntimeError):
    """Missing feature-network weights or bad inputs for the fidelity metrics."""


class Uint8Images(torch.utils.data.Dataset):
    """(N, 3, H, W) or (N, H, W, 3) uint8 array/tensor (e.g. a samples .npz) as torch-fidelity input."""

    def __init__(self, images):
        x = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise FidelityError(f"expected uint8 images (N, 3, H, W) or (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
        self.x = x if x.shape[1] == 3 else x.permute(0, 3, 1, 2)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i].contiguous()


class SplitImages(torch.utils.data.Dataset):
    """A prepared split as uint8 (3, H, W) items, optionally a subset of indices."""

    def __init__(self, data_dir, split="train", indices=None):
        self.ds = ImageDataset(data_dir, split)
        self.indices = np.arange(len(self.ds)) if indices is None else np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.ds.uint8(int(self.indices[i]))


def _sha(path: str | Path) -> str:
    return sha256_file(path)[:12]


def _as_input(images):
    return images if isinstance(images, torch.utils.data.Dataset) else Uint8Images(images)


def _reference(reference, name: str | None, split: str = "train"):
    """(dataset, cache tag): a prepared-data directory (its train split, tagged by dataset and size), or
    uint8 images / a Dataset, cached under `name` when one is given."""
    if isinstance(reference, torch.utils.data.Dataset):
        return reference, name
    if not isinstance(reference, (str, Path)):
        return Uint8Images(reference), name
    m = load_manifest(reference)
    n = m["splits"][split]["count"]
    return SplitImages(reference, split), f"{m['dataset']}{m['image_size']}-{split}{n}"


@contextlib.contextmanager
def _torch_home(path: str):
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(Path(path).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


def feature_networks(eval_cfg: C.EvaluationConfig, evaluator_weights: str | Path | None) -> dict:
    """{"main": torch-fidelity kwargs for fid/isc, "prc": kwargs for precision/recall, "tag": {...}}."""
    if eval_cfg.feature_network == "standin":
        if not evaluator_weights:
            raise FidelityError("feature_network 'standin' needs the evaluator weights: pass --evaluator "
                                "results/<scale>/aux_models/evaluator.safetensors (rule train_standin)")
        from maetok.models.standins import register_evaluator

        kw = {"feature_extractor": register_evaluator(evaluator_weights),
              "feature_extractor_weights_path": str(evaluator_weights)}
        tag = f"standin{_sha(evaluator_weights)}"
        return {"main": kw, "prc": kw, "tag": {"main": tag, "prc": tag}}
    ckpts = Path(eval_cfg.torch_home) / "hub" / "checkpoints"
    for name, url in ((INCEPTION_FILE, INCEPTION_URL), (VGG16_FILE, VGG16_URL)):
        if not (ckpts / name).is_file():
            raise FidelityError(
                f"{ckpts / name} not found. The paper-scale FID/IS/precision/recall need it and nothing is downloaded "
                f"here: on a machine with internet run `curl -L -o {name} {url}`, copy it to {ckpts}/ (or `dvc pull` "
                "it), or point params.yaml `evaluation.torch_home` at a directory holding hub/checkpoints/.")
    return {"main": {"feature_extractor": "inception-v3-compat",
                     "feature_extractor_weights_path": str(ckpts / INCEPTION_FILE)},
            "prc": {"feature_extractor": "vgg16", "feature_extractor_weights_path": str(ckpts / VGG16_FILE)},
            "tag": {"main": f"inception{_sha(ckpts / INCEPTION_FILE)}", "prc": f"vgg16{_sha(ckpts / VGG16_FILE)}"}}


def fidelity_metrics(images, reference, eval_cfg: C.EvaluationConfig, evaluator_weights: str | Path | None,
                     cache_dir: str | Path, metrics=METRICS, reference_name: str | None = None,
                     prc_reference_size: int = 10_000, seed: int = 0, verbose: bool = False) -> dict:
    """FID / IS / precision / recall of `images` against `reference`.

    images: uint8 (N, 3, H, W) or (N, H, W, 3) tensor/array, or a torch Dataset of uint8
    (3, H, W). reference: a prepared-data directory (its train split; statistics cached in
    cache_dir), or uint8 images / a Dataset, whose statistics are cached under
    `reference_name` (+ the feature network's hash) when given. Returns {"fid", "isc_mean", "isc_std",
    "precision", "recall"} for the requested metrics.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise FidelityError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    nets = feature_networks(eval_cfg, evaluator_weights)
    inp1 = _as_input(images)
    ref, ref_tag = _reference(reference, reference_name)
    common = {"cuda": torch.cuda.is_available(), "batch_size": eval_cfg.batch_size, "verbose": verbose,
              "cache_root": str(Path(cache_dir).resolve()), "samples_shuffle": False,
              # tiny: in-memory arrays, loader workers only cost start-up time; paper: decode JPEGs in 4 workers
              "save_cpu_ram": eval_cfg.feature_network == "standin"}
    torch_home = eval_cfg.torch_home if eval_cfg.feature_network == "inception" else str(cache_dir)
    main_wanted = "fid" in metrics or "isc" in metrics
    # One feature network for every metric (tiny): the second call reads the images' features back
    # from a per-call cache entry instead of running the network over them again; removed at the end.
    input1 = {}
    if main_wanted and "prc" in metrics and nets["main"] == nets["prc"]:
        input1 = {"input1_cache_name": f"input1-{os.getpid()}-{uuid.uuid4().hex}"}
    out = {}
    try:
        with _torch_home(torch_home):
            if main_wanted:
                cache = {"cache": ref_tag is not None, "input2_cache_name": f"{ref_tag}-{nets['tag']['main']}"} \
                    if ref_tag else {"cache": False}
                cache["cache"] |= bool(input1)
                m = torch_fidelity.calculate_metrics(input1=inp1, input2=ref if "fid" in metrics else None,
                                                     fid="fid" in metrics, isc="isc" in metrics,
                                                     **nets["main"], **common, **cache, **input1)
                if "fid" in metrics:
                    out["fid"] = float(m["frechet_inception_distance"])
                if "isc" in metrics:
                    out["isc_mean"], out["isc_std"] = float(m["inception_score_mean"]), float(m["inception_score_std"])
            if "prc" in metrics:
                prc_ref, cache = ref, {"cache": bool(input1)}
                if len(ref) > prc_reference_size:
                    idx = np.sort(np.random.default_rng(seed).choice(len(ref), prc_reference_size, replace=False))
                    prc_ref = torch.utils.data.Subset(ref, idx.tolist())
                if ref_tag is not None:
                    cache = {"cache": True,
                             "input2_cache_name": f"{ref_tag}-sub{len(prc_ref)}s{seed}-{nets['tag']['prc']}"}
                m = torch_fidelity.calculate_metrics(input1=inp1, input2=prc_ref, prc=True, **nets["prc"], **common,
                                                     **cache, **input1)
                out["precision"], out["recall"] = float(m["precision"]), float(m["recall"])
    finally:
        if input1:
            for f in Path(cache_dir).glob(f"{input1['input1_cache_name']}-*"):
                f.unlink(missing_ok=True)
    return out
