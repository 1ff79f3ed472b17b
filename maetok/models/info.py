"""`maetok model-info`: parameter counts (and generator GFLOPs) of any registry model.

Models are built on the meta device, so even SiT-XL/1 is counted instantly.
"""

from __future__ import annotations

import torch

from maetok.config import NetworksConfig, load_params
from maetok.models import sit, teachers, tokenizer


def tokenizer_info(name: str, networks: NetworksConfig | None = None) -> dict:
    """Counts per component at the registry size with the paper's three aux decoders (HOG, DINO, CLIP).

    The DINO/CLIP heads are as wide as the teachers of `networks` (default: params.yaml's paper-scale
    `tokenizer.networks`), from `teachers.teacher_dims`, which also sizes them for training.

    `built` counts what this implementation has. `official_equivalent` adds the parameters
    the official code creates for this configuration and never uses (decoder patch
    embedding / position table / final-norm modulation, the aux decoders' class heads):
    173.9M for MAETok-B/16's encoder + bottleneck + decoder, as the paper. The paper's
    176M further includes a 2.13M REPA projector the official code builds and never calls;
    it is reported separately and not built here.
    """
    if networks is None:
        networks = load_params().scales["paper"].tokenizer.networks
    dims = teachers.teacher_dims(networks, ("dino", "clip"))
    with torch.device("meta"):
        model = tokenizer.MAETok_models[name](aux_targets=("hog", "dino", "clip"), aux_dims=dims)
    built = tokenizer.model_info(model)
    extra = tokenizer.official_only_params(model)
    official = {
        "tokenizer": built["tokenizer"]["total"] + extra["decoder"],
        "aux_decoders": built["aux_decoders"]["total"] + extra["aux_decoders"],
    }
    official["with_unused_repa_projector"] = official["tokenizer"] + extra["repa_projector"]
    return {"name": name, "kind": "tokenizer", "image_size": model.img_size, "patch_size": model.patch_size,
            "latent_shape": [model.num_latent_tokens, model.latent_dim], "built": built,
            "official_equivalent": official,
            "teachers": {t: {"model": getattr(networks, f"{t}_model") if networks.kind == "pretrained"
                             else f"stand-in teacher-{t}", "width": d} for t, d in dims.items()},
            "summary_millions": {"tokenizer (enc+bottleneck+dec)": round(official["tokenizer"] / 1e6, 2),
                                 "aux decoders (hog+dino+clip)": round(official["aux_decoders"] / 1e6, 2)}}


def generator_info(name: str, num_tokens: int = 128, latent_dim: int = 32, num_classes: int = 1000) -> dict:
    with torch.device("meta"):
        model = sit.SiT_models[name](num_tokens=num_tokens, in_channels=latent_dim, num_classes=num_classes)
    counts = sit.model_info(model)
    return {"name": name, "kind": "generator", "num_tokens": num_tokens, "latent_dim": latent_dim,
            "num_classes": num_classes, **counts, "forward_gflops": round(sit.forward_gflops(model, num_tokens), 2),
            "gflops_convention": "2 x multiply-adds of all matmuls incl. attention; batch 1, no CFG doubling"}


def model_info(name: str, num_tokens: int = 128, networks: NetworksConfig | None = None) -> dict:
    if name in tokenizer.MAETok_models:
        return tokenizer_info(name, networks)
    if name in sit.SiT_models:
        return generator_info(name, num_tokens)
    raise ValueError(f"unknown model {name!r}; tokenizers: {list(tokenizer.MAETok_models)}, "
                     f"generators: {list(sit.SiT_models)}")
