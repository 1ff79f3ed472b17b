"""Weight files: building a tokenizer or generator from its config, saving it, loading it back.

Weights are safetensors, written atomically; a tokenizer or generator file carries the config
that rebuilds it (and, for a generator, the latent statistics it was trained with and its
tokenizer's sha256) in the safetensors metadata, so sampling, evaluation and latent caching need
nothing but the file. Training checkpoints (maetok/train/checkpoint.py) use the same helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from maetok import config as C
from maetok.models.sit import SiT, SiT_models
from maetok.models.tokenizer import MAETok, MAETok_models
from maetok.utils.io import atomic_path


class CheckpointError(RuntimeError):
    """A weights file or checkpoint that is missing or unreadable; the message says what to delete or rebuild."""


# --------------------------------------------------------------------------- safetensors files
def state_dict_to_save(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous, CPU, de-aliased tensors (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


# safetensors writes its metadata map in a random key order per process, so two identical
# runs would give files with different bytes (and different DVC hashes). All metadata
# goes into one key, as sorted JSON; `unpack_metadata` also reads files with plain keys.
METADATA_KEY = "maetok"


def pack_metadata(metadata: dict | None) -> dict[str, str] | None:
    if not metadata:
        return None
    return {METADATA_KEY: json.dumps({k: str(v) for k, v in metadata.items()}, sort_keys=True)}


def unpack_metadata(raw: dict[str, str] | None) -> dict[str, str]:
    raw = raw or {}
    return json.loads(raw[METADATA_KEY]) if set(raw) == {METADATA_KEY} else dict(raw)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    """Tensors, atomically, as safetensors (with optional string metadata)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=pack_metadata(metadata))


def save_weights(module: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> None:
    """A module's weights alone, atomically, as safetensors."""
    save_tensors(module.state_dict(), path, metadata)


def load_weights(module: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    path = Path(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable weights file ({e}); delete it and rerun the rule "
                              "that produced it") from None
    module.load_state_dict(state, strict=strict)


def read_weights(path: str | Path, what: str, rule: str,
                 keep=lambda key: True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, or a CheckpointError saying how to rebuild it.
    Only the tensors whose key passes `keep` are read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found; build it with `snakemake {path}` (rule {rule})")
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep(k)}, unpack_metadata(f.metadata())
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(f"{path}: unreadable {what} ({e}); delete it and rerun rule {rule}") from None


# --------------------------------------------------------------------------- tokenizer files
def build_tokenizer(cfg: C.TokenizerConfig, image_size: int, aux_dims: dict | None = None) -> MAETok:
    """The MAETok of `cfg` (stage-1 layout, with its aux decoders)."""
    m, mask = cfg.model, cfg.mask
    low, high = (mask.ratio_low, mask.ratio_high) if mask.enabled else (0.0, 0.0)
    return MAETok_models[m.size](
        img_size=image_size, num_latent_tokens=m.num_latent_tokens, latent_dim=m.latent_dim,
        latent_tokens=m.latent_tokens, bottleneck=m.bottleneck, pos_embed=m.pos_embed,
        enc_abs_pos=m.enc_abs_pos, decoder_block=m.decoder_block, mask_ratio_low=low, mask_ratio_high=high,
        mask_ratio_dist=mask.distribution, aux_targets=tuple(cfg.aux.targets), aux_depth=cfg.aux.depth,
        aux_dims=aux_dims or None, aux_losses=C.to_dict(cfg.aux.loss), **({"depth": m.depth} if m.depth else {}))


GAN_PREFIX = "gan."   # keys of the discriminator state in a stage-1 file (maetok.train.tokenizer.gan_state)


def save_tokenizer(model: MAETok, path: str | Path, cfg: C.TokenizerConfig, image_size: int,
                   aux_dims: dict, extra: dict | None = None, gan: dict | None = None) -> None:
    """Weights (without aux decoders) + the config that rebuilds them, in one safetensors file;
    `gan` (tensors under GAN_PREFIX) adds the discriminator state that stage 2 continues from."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("aux_decoders.")}
    state.update(gan or {})
    meta = {"config": json.dumps(C.to_dict(cfg)), "image_size": str(image_size), "aux_dims": json.dumps(aux_dims),
            **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    save_tensors(state, path, meta)


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> tuple[MAETok, C.TokenizerConfig, dict]:
    """Rebuild a saved tokenizer from the config stored in the file; eval mode, no aux decoders."""
    state, meta = read_weights(path, "tokenizer file", "train_tokenizer / finetune_decoder",
                               keep=lambda key: not key.startswith(GAN_PREFIX))
    cfg = C.from_dict(C.TokenizerConfig, json.loads(meta["config"]), f"{path}:config")
    cfg = C.dataclasses.replace(cfg, aux=C.dataclasses.replace(cfg.aux, targets=()))
    model = build_tokenizer(cfg, int(meta["image_size"]))
    model.load_state_dict(state)
    info = {k: json.loads(v) for k, v in meta.items() if k not in ("config",)}
    return model.to(device).eval(), cfg, info


# --------------------------------------------------------------------------- generator files
def build_generator(cfg: C.GeneratorConfig, num_tokens: int, latent_dim: int, num_classes: int) -> SiT:
    dropout = cfg.transport.class_dropout if cfg.transport.conditional else 0.0
    depth = {"depth": cfg.depth} if cfg.depth else {}  # else the size's own
    return SiT_models[cfg.size](num_tokens=num_tokens, in_channels=latent_dim, num_classes=num_classes,
                                class_dropout_prob=dropout, **depth)


def weights_metadata(cfg: C.GeneratorConfig, stats, step: int) -> dict:
    """What a generator file records besides its weights; `stats` is the `maetok.latents.LatentStats`
    of the latents it was trained on (their normalisation is undone with them when sampling)."""
    return {"config": json.dumps(C.to_dict(cfg)), "step": step, "num_tokens": stats.num_latent_tokens,
            "latent_dim": stats.latent_dim, "num_classes": stats.num_classes,
            "tokenizer_sha256": stats.tokenizer_sha256,
            "latent_stats": json.dumps({k: stats.raw[k] for k in ("mean", "std", "channel_mean", "channel_std")})}


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[SiT, C.GeneratorConfig, dict]:
    """EMA weights saved by `train_generator` -> (eval-mode SiT, its config, metadata)."""
    state, meta = read_weights(path, "generator weights", "train_generator")
    cfg = C.from_dict(C.GeneratorConfig, json.loads(meta["config"]), f"{path}:config")
    info = {"step": int(meta["step"]), "num_tokens": int(meta["num_tokens"]), "latent_dim": int(meta["latent_dim"]),
            "num_classes": int(meta["num_classes"]), "tokenizer_sha256": meta["tokenizer_sha256"],
            "latent_stats": json.loads(meta["latent_stats"])}
    model = build_generator(cfg, info["num_tokens"], info["latent_dim"], info["num_classes"])
    model.load_state_dict(state)
    return model.to(device).eval(), cfg, info
