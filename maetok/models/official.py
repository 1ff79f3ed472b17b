"""Import and export of the released weights of the official MAETok code
(github.com/Hhhhhhao/continuous_tokenizer; how to download and convert: docs/official_weights.md).

The official tokenizer (`AEModel`) computes the function of our `MAETok` with `pos_embed="rope_mixed"`,
`enc_abs_pos=True`, `decoder_block="modulated"` and `bottleneck="ae"`, and the official `SiT` (1D latents,
`vae_1d`) that of our `SiT`; tests/models/test_official.py checks both on fixtures computed by the official
code. Only the parameter layout differs:

- names: the official timm ViTs sit under `encoder.model.*` / `decoder.model.*`, the bottleneck
  projections are `quant_conv` / `post_quant_conv`, the pixel head is `decoder.to_pixel.model`
  (`TOKENIZER_MAP`); the SiT names are ours, one for one (`GENERATOR_MAP`);
- RoPE-Mixed frequencies: official (2, depth, heads * head_dim / 2), head-major; ours (2, depth, heads,
  head_dim / 2). Both rotate channel pairs (2j, 2j + 1), so a reshape is the whole mapping;
- tensors the official code builds but never uses for inference are dropped (`TOKENIZER_UNUSED`); the
  RoPE grid buffers are checked to be the raster grid our model computes from the image size.

The head count is not visible in any shape: it comes from the registry size whose state-dict layout
matches the file (every official model has head_dim 64 in the tokenizer and 72 in SiT-XL).

`import_tokenizer` / `import_generator` write the file our trainers write (`save_tokenizer`,
`save_weights` + `weights_metadata`) with its config embedded, so every loader, rule and command reads it
as a trained one; the source (file, sha256, dropped tensors) is recorded under the metadata key
`official`. `export_tokenizer` / `export_generator` go back to the official names.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import pickle
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from maetok import config as C
from maetok.utils.io import atomic_path, sha256_file

SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Where training checkpoints keep the weights, in order of preference (the EMA is what DiT-style
# sampling evaluates). A bare state dict needs none.
WRAPPERS = ("ema", "model", "state_dict")
STEP_KEYS = ("train_steps", "steps", "step", "global_step")
# Prefixes added by DistributedDataParallel and torch.compile when a wrapped module is saved.
WRAPPED_PREFIXES = ("module.", "_orig_mod.")
OFFICIAL_REPO = "github.com/Hhhhhhao/continuous_tokenizer"


class OfficialWeightsError(ValueError):
    """An official checkpoint that cannot be imported, or weights of ours that cannot be exported; the
    message names the file, the keys and the fix."""


# --------------------------------------------------------------------------------------------
# Key maps: (official name, our name) templates; {slot} matches the pattern in _SLOTS
# --------------------------------------------------------------------------------------------
_SLOTS = {
    "i": r"\d+",
    "wb": "weight|bias",
    "part": "encoder|decoder",
    "enc": r"norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2",
    "ls": "ls1|ls2",
    "enc_tok": "latent_tokens|latent_pos_embed|mask_token",
    "dec": r"attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2|adaLN_modulation\.1",
    "dec_tok": "latent_pos_embed|mask_token",
    "t": "0|2",
    "final": r"adaLN_modulation\.1|linear",
}

TOKENIZER_MAP = (
    ("encoder.model.patch_embed.proj.{wb}", "encoder.patch_embed.proj.{wb}"),
    ("encoder.model.cls_token", "encoder.cls_token"),
    ("encoder.model.pos_embed", "encoder.pos_embed"),
    ("encoder.model.blocks.{i}.{enc}.{wb}", "encoder.blocks.{i}.{enc}.{wb}"),
    ("encoder.model.blocks.{i}.{ls}.gamma", "encoder.blocks.{i}.{ls}.gamma"),
    ("encoder.model.norm.{wb}", "encoder.norm.{wb}"),
    ("encoder.{enc_tok}", "encoder.{enc_tok}"),
    ("{part}.freqs", "{part}.rope.freqs"),  # (2, depth, heads * d / 2) <-> (2, depth, heads, d / 2)
    ("quant_conv.{wb}", "bottleneck.proj.{wb}"),
    ("post_quant_conv.{wb}", "decoder.decoder_embed.{wb}"),
    ("decoder.model.blocks.{i}.{dec}.{wb}", "decoder.blocks.{i}.{dec}.{wb}"),
    ("decoder.{dec_tok}", "decoder.{dec_tok}"),
    ("decoder.to_pixel.model.{wb}", "decoder.head.{wb}"),
)

GENERATOR_MAP = (
    ("x_embedder.{wb}", "x_embedder.{wb}"),
    ("pos_embed", "pos_embed"),
    ("t_embedder.mlp.{t}.{wb}", "t_embedder.mlp.{t}.{wb}"),
    ("y_embedder.embedding_table.weight", "y_embedder.embedding_table.weight"),
    ("blocks.{i}.{dec}.{wb}", "blocks.{i}.{dec}.{wb}"),
    ("final_layer.{final}.{wb}", "final_layer.{final}.{wb}"),
)

# Official tokenizer tensors with no part in inference: (regex, why), dropped on import.
TOKENIZER_UNUSED = (
    (r"(encoder|decoder)\.freqs_t_[xy]", "RoPE grid coordinates (buffers; recomputed from the image size, checked)"),
    (r"decoder\.model\.(patch_embed\.proj\.(weight|bias)|pos_embed)", "built by the decoder's ViT, never used"),
    (r"decoder\.model\.norm\.adaLN_modulation\.1\.(weight|bias)",
     "final-norm modulation of the latent rows, which the decoder discards"),
    (r"projection\..+", "REPA projector, built but never called"),
    (r"repa_model\..+", "frozen DINOv2 teacher (training only)"),
    (r"clip_model\..+", "frozen SigLIP teacher (training only)"),
    (r"(decoder|post_quant_conv|to_pixel)_(hog|dino|clip)\..+",
     "auxiliary decoders (training only; tokenizer files of ours carry none)"),
    (r"hog_generator\..+", "HOG target filters (training only)"),
)


@functools.cache
def _regex(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(re.escape(p) if j % 2 == 0 else f"(?P<{p}>{_SLOTS[p]})" for j, p in enumerate(parts)))


def rename(key: str, table, to_ours: bool = True) -> str | None:
    """`key` in the other layout of `table` (official -> ours, or ours -> official); None if no rule matches."""
    src, dst = (0, 1) if to_ours else (1, 0)
    for rule in table:
        m = _regex(rule[src]).fullmatch(key)
        if m:
            return rule[dst].format(**m.groupdict())
    return None


def _preview(keys, n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


# --------------------------------------------------------------------------------------------
# Reading a released file
# --------------------------------------------------------------------------------------------
def _is_state_dict(obj) -> bool:
    return (isinstance(obj, dict) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def read_official(path: str | Path, state_key: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, source info) of a released file: .safetensors, or .bin / .pt / .pth read with
    `torch.load(weights_only=True)`; a state dict bare or under `state_key` (default: the first of
    WRAPPERS present). OfficialWeightsError for a missing, corrupted or unrecognised file."""
    path = Path(path)
    if not path.is_file():
        raise OfficialWeightsError(f"{path} not found: download the released file first (docs/official_weights.md)")
    suffix = path.suffix.lower()
    redownload = "the download is truncated or corrupted: delete it and download it again (docs/official_weights.md)"
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                obj = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - every unreadable file gets the same advice
            raise OfficialWeightsError(f"{path}: unreadable safetensors file ({e}); {redownload}") from None
    elif suffix in SUFFIXES:
        try:
            # Official training checkpoints also store their argparse Namespace; it holds no code.
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            if refused is None:  # not a pickle at all
                raise OfficialWeightsError(f"{path}: unreadable checkpoint (not a torch file); {redownload}") from None
            raise OfficialWeightsError(
                f"{path}: refused by torch.load(weights_only=True): besides tensors it holds a {refused[1]} object. "
                "Load it once in the official code and save its state_dict() alone, or use the released "
                ".safetensors file") from None
        except Exception as e:  # noqa: BLE001
            raise OfficialWeightsError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); "
                                       f"{redownload}") from None
    else:
        raise OfficialWeightsError(f"{path}: unknown file type {suffix!r}; expected one of {', '.join(SUFFIXES)}")

    wrapper, step = "", None
    if state_key is None and _is_state_dict(obj):
        state = obj
    else:
        if not isinstance(obj, dict):
            raise OfficialWeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
        candidates = (state_key,) if state_key else WRAPPERS
        wrapper = next((k for k in candidates if _is_state_dict(obj.get(k))), "")
        if not wrapper:
            raise OfficialWeightsError(
                f"{path}: no state dict under {list(candidates)}; its top-level keys are {_preview(map(str, obj))}. "
                "Pass --state-key with the key that holds the weights")
        state = obj[wrapper]
        step = next((int(obj[k]) for k in STEP_KEYS if isinstance(obj.get(k), int)), None)
    for prefix in WRAPPED_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    info = {"repo": OFFICIAL_REPO, "file": path.name, "sha256": sha256_file(path), "wrapper": wrapper}
    if step is not None:
        info["step"] = step
    return state, info


def check_sha256(path: str | Path, expected: str) -> str:
    """The sha256 of `path` if it is `expected`; else OfficialWeightsError naming the file and both hashes."""
    path = Path(path)
    if not path.is_file():
        raise OfficialWeightsError(f"{path} not found: download the released file first (docs/official_weights.md)")
    actual, expected = sha256_file(path), expected.lower()
    if actual != expected:
        raise OfficialWeightsError(
            f"{path}: sha256 is {actual}, expected {expected} (--sha256; in the workflow the variant's "
            "`weights.sha256` in params.yaml). The download is truncated, corrupted or another file: delete it and "
            "download it again (docs/official_weights.md); if the release itself changed, update the expected hash")
    return actual


def detect_kind(state: dict) -> str | None:
    """"tokenizer" / "generator" for an official state dict, "ours" for one already in our layout, else None."""
    if "bottleneck.proj.weight" in state or "encoder.patch_embed.proj.weight" in state:
        return "ours"
    if "quant_conv.weight" in state or any(k.startswith("encoder.model.") for k in state):
        return "tokenizer"
    if any(k.startswith(("x_embedder.", "t_embedder.", "y_embedder.")) for k in state):
        return "generator"
    return None


def check_kind(state: dict, kind: str, path: str | Path) -> None:
    found = detect_kind(state)
    if found == kind:
        return
    if found == "ours":
        raise OfficialWeightsError(f"{path} is already in this project's layout (a file written by maetok); "
                                   "no import is needed")
    if found is None:
        raise OfficialWeightsError(
            f"{path} is neither an official MAETok tokenizer (keys quant_conv.*, encoder.model.*) nor an official "
            f"SiT (x_embedder.*, t_embedder.*); its keys start with {_preview(state, 5)}")
    raise OfficialWeightsError(f"{path} holds an official {found}, not a {kind}: run "
                               f"`maetok import-official {found} {path} --out ...`")


def _split(state: dict, table, unused, path, what: str) -> tuple[dict, dict, dict]:
    """Rename official keys to ours -> (renamed, {our key: official key}, {reason: dropped keys});
    OfficialWeightsError naming every key that is neither mapped nor known to be unused."""
    renamed, origin, dropped, unknown = {}, {}, {}, []
    for key, value in state.items():
        ours = rename(key, table)
        if ours is not None:
            renamed[ours], origin[ours] = value, key
            continue
        reason = next((why for rx, why in unused if re.fullmatch(rx, key)), None)
        if reason is None:
            unknown.append(key)
        else:
            dropped.setdefault(reason, []).append(key)
    if unknown:
        raise OfficialWeightsError(
            f"{path}: {len(unknown)} key(s) that the official {what} does not have: {_preview(unknown)}. The file is "
            "another model or another version of the official code; docs/official_weights.md lists the layout "
            "this importer reads")
    return renamed, origin, dropped


def _problems(renamed: dict, target: dict, origin: dict, table) -> list[str]:
    """How `renamed` (our names) fails to fit the state dict `target` of one registry size, in official names."""
    problems = [f"missing {rename(k, table, to_ours=False) or k}" for k in target if k not in renamed]
    problems += [f"unexpected {origin[k]}" for k in renamed if k not in target]
    for k in renamed.keys() & target.keys():
        have, want = tuple(renamed[k].shape), tuple(target[k].shape)
        fits = renamed[k].numel() == target[k].numel() if k.endswith("rope.freqs") else have == want
        if not fits:
            problems.append(f"{origin[k]} has shape {have}, expected {want}")
    return sorted(problems)


def _match(renamed, origin, table, build, sizes, path, describe: str) -> tuple[str, dict]:
    """(name, state dict on meta) of the registry size whose layout `renamed` fits exactly; else
    OfficialWeightsError naming the closest size and its mismatches."""
    best = None
    for name in sizes:
        try:
            with torch.device("meta"):
                target = build(name).state_dict()
        except ValueError:  # e.g. the image size is not a multiple of this size's patch
            continue
        problems = _problems(renamed, target, origin, table)
        if not problems:
            return name, target
        if best is None or len(problems) < len(best[1]):
            best = (name, problems)
    detail = f" The closest size, {best[0]}, differs in: {_preview(best[1], 6)}." if best else ""
    raise OfficialWeightsError(
        f"{path}: {describe} fits no size of the registry.{detail} Missing keys or a shape mismatch mean a "
        "truncated or edited file; a consistent but different architecture needs a registry entry "
        "(MAETok_models in maetok/models/tokenizer.py, SiT_models in maetok/models/sit.py)")


def _fit(renamed: dict, target: dict) -> dict:
    """RoPE frequencies reshaped to our (2, depth, heads, head_dim / 2), as float32 tensors."""
    return {k: (v.reshape(target[k].shape) if k.endswith("rope.freqs") else v).float() for k, v in renamed.items()}


def _read_config_json(path: str | Path | None) -> dict:
    """The official model config (the config.json released next to the weights), or {}."""
    if not path:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise OfficialWeightsError(f"{path}: unreadable config.json ({e}); download it again") from None
    return raw.get("config", raw) if isinstance(raw.get("config"), dict) else raw


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
def _check_grid(state: dict, path) -> None:
    """The official RoPE position buffers must be the raster grid (x = n mod W, y = n div W) our Rope2D uses."""
    for part in ("encoder", "decoder"):
        for axis in ("x", "y"):
            key = f"{part}.freqs_t_{axis}"
            if key not in state:
                continue
            n = state[key].numel()
            side = math.isqrt(n)
            idx = torch.arange(n)
            ref = idx % side if axis == "x" else idx // side
            if side * side != n or not torch.equal(state[key].flatten().float(), ref.float()):
                raise OfficialWeightsError(
                    f"{path}: {key} is not the raster grid of a square image (x = n mod W, y = n div W), the only "
                    "token positions our RoPE computes; this checkpoint cannot be expressed by MAETok")


def tokenizer_geometry(state: dict, path) -> dict:
    """Image size, patch, L, H and the widths / depths of an official tokenizer state dict."""
    need = ("encoder.model.patch_embed.proj.weight", "encoder.model.pos_embed", "encoder.model.cls_token",
            "encoder.latent_tokens", "quant_conv.weight", "post_quant_conv.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise OfficialWeightsError(f"{path}: missing {', '.join(missing)}; not a complete official ViT MAETok "
                                   "tokenizer (the file is truncated, or another tokenizer of the official code)")
    for part in ("encoder", "decoder"):
        if f"{part}.freqs" not in state:
            raise OfficialWeightsError(
                f"{path}: no {part}.freqs: this tokenizer was trained without RoPE-Mixed (use_rope / rope_mixed "
                "off), which MAETok's import does not cover (pos_embed 'rope_mixed' is the released architecture)")
    if "decoder.model.cls_token" in state:
        raise OfficialWeightsError(f"{path}: decoder.model.cls_token: a decoder with a cls token (dec_cls_token "
                                   "true) cannot be expressed by MAETok, whose decoder has none (the release has none)")
    patch = state["encoder.model.patch_embed.proj.weight"].shape[-1]
    n = state["encoder.model.pos_embed"].shape[1] - 1
    side = math.isqrt(n)
    if side * side != n:
        raise OfficialWeightsError(f"{path}: encoder.model.pos_embed has {n} image rows, not a square grid")

    def depth(prefix):
        return len({k.split(".")[3] for k in state if k.startswith(prefix)})

    return {"image_size": side * patch, "patch_size": patch,
            "num_latent_tokens": state["encoder.latent_tokens"].shape[1],
            "latent_dim": state["quant_conv.weight"].shape[0],
            "encoder_width": state["encoder.model.cls_token"].shape[-1],
            "encoder_depth": depth("encoder.model.blocks."),
            "decoder_width": state["post_quant_conv.weight"].shape[0],
            "decoder_depth": depth("decoder.model.blocks.")}


def _registry_only(cfg):
    """`cfg` without the per-variant architecture overrides (`depth`): the registry size alone decides."""
    names = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: None for k in ("depth",) if k in names})


def _official_model_config(model_cfg: C.TokenizerModelConfig, size: str, geo: dict) -> C.TokenizerModelConfig:
    """`model_cfg` with the settings the official architecture has (what the official code builds)."""
    return dataclasses.replace(_registry_only(model_cfg), size=size, num_latent_tokens=geo["num_latent_tokens"],
                               latent_dim=geo["latent_dim"], latent_tokens=True, bottleneck="ae",
                               pos_embed="rope_mixed", enc_abs_pos=True, decoder_block="modulated")


def convert_tokenizer(state: dict, base: C.TokenizerConfig, path="official tokenizer",
                      official_config: dict | None = None) -> tuple[dict, C.TokenizerConfig, int, dict]:
    """Official tokenizer state dict -> (our state dict, its TokenizerConfig, image size, dropped keys).

    `base` supplies everything the weights do not determine (losses, optimiser: how a variant would train
    it); its `model` block is replaced by the architecture read from the weights."""
    from maetok.models.io import build_tokenizer
    from maetok.models.tokenizer import MAETok_models

    check_kind(state, "tokenizer", path)
    geo = tokenizer_geometry(state, path)
    _check_grid(state, path)
    for key, ours in (("image_size", "image_size"), ("num_latent_tokens", "num_latent_tokens"),
                      ("codebook_embed_dim", "latent_dim")):
        if key in (official_config or {}) and official_config[key] != geo[ours]:
            raise OfficialWeightsError(f"{path}: config.json says {key} = {official_config[key]}, the weights "
                                       f"{geo[ours]}: the config belongs to another checkpoint")
    renamed, origin, dropped = _split(state, TOKENIZER_MAP, TOKENIZER_UNUSED, path, "MAETok tokenizer")
    no_aux = dataclasses.replace(base.aux, targets=())

    def build(size):
        cfg = dataclasses.replace(base, model=_official_model_config(base.model, size, geo), aux=no_aux)
        return build_tokenizer(cfg, geo["image_size"])

    describe = ("a tokenizer with encoder {encoder_width} wide x {encoder_depth} blocks, decoder {decoder_width} wide "
                "x {decoder_depth} blocks, patch {patch_size}, {image_size} px, L = {num_latent_tokens}, "
                "H = {latent_dim}").format(**geo)
    size, target = _match(renamed, origin, TOKENIZER_MAP, build, MAETok_models, path, describe)
    cfg = dataclasses.replace(base, model=_official_model_config(base.model, size, geo))
    return _fit(renamed, target), cfg, geo["image_size"], dropped


def import_tokenizer(src: str | Path, out: str | Path, base: C.TokenizerConfig, state_key: str | None = None,
                     official_config: str | Path | None = None) -> dict:
    """Convert a released tokenizer file into our tokenizer file `out`; return a summary."""
    from maetok.models.io import build_tokenizer, save_tokenizer

    state, source = read_official(src, state_key)
    off_cfg = _read_config_json(official_config)
    ours, cfg, image_size, dropped = convert_tokenizer(state, base, src, off_cfg)
    no_aux = dataclasses.replace(cfg, aux=dataclasses.replace(cfg.aux, targets=()))
    model = build_tokenizer(no_aux, image_size)
    model.load_state_dict(ours)
    source["dropped"] = {why: len(keys) for why, keys in dropped.items()}
    for key in ("vq_mean", "vq_std"):  # the scalar latent normalisation of the official SiT (config.json only)
        if key in off_cfg:
            source[key] = float(off_cfg[key])
    save_tokenizer(model, out, cfg, image_size, {}, extra={"official": source})
    return {"size": cfg.model.size, "image_size": image_size, "num_latent_tokens": cfg.model.num_latent_tokens,
            "latent_dim": cfg.model.latent_dim, "dropped": sum(source["dropped"].values()), "source": source}


def export_tokenizer(model) -> dict[str, torch.Tensor]:
    """Our MAETok -> a state dict in the official `AEModel` layout (strict-loadable there). Tensors the official
    code builds but never uses are written as zeros; the RoPE grid buffers as the raster grid."""
    enc, dec = model.encoder, model.decoder
    from maetok.models.blocks import ModulatedBlock

    blockers = [what for what, ok in (
        ("a cls token and absolute table in the encoder (enc_abs_pos)", enc.cls_token is not None),
        ("RoPE-Mixed image positions (pos_embed 'rope_mixed')", enc.rope is not None and enc.rope.mode == "mixed"),
        ("latent tokens (latent_tokens)", enc.has_latents),
        ("an AE bottleneck (bottleneck 'ae')", model.bottleneck.kind == "ae"),
        ("latent-modulated decoder blocks (decoder_block 'modulated')", isinstance(dec.blocks[0], ModulatedBlock)),
    ) if not ok]
    if blockers:
        raise OfficialWeightsError("the official AEModel needs " + "; ".join(blockers) + ": this tokenizer has a "
                                   "different architecture and has no official layout")
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith(("aux_decoders.", "hog.")):
            continue
        official = rename(key, TOKENIZER_MAP, to_ours=False)
        if official is None:
            raise OfficialWeightsError(f"{key} has no official counterpart")
        out[official] = value.reshape(2, value.shape[1], -1) if key.endswith("rope.freqs") else value
    side = model.img_size // model.patch_size
    n = torch.arange(side * side)
    for part in ("encoder", "decoder"):
        out[f"{part}.freqs_t_x"], out[f"{part}.freqs_t_y"] = (n % side).float(), (n // side).float()
    width, p = dec.head.in_features, model.patch_size
    out["decoder.model.patch_embed.proj.weight"] = torch.zeros(width, model.in_chans, p, p)
    out["decoder.model.patch_embed.proj.bias"] = torch.zeros(width)
    out["decoder.model.pos_embed"] = torch.zeros(1, side * side + 1, width)
    out["decoder.model.norm.adaLN_modulation.1.weight"] = torch.zeros(2 * width, model.latent_dim)
    out["decoder.model.norm.adaLN_modulation.1.bias"] = torch.zeros(2 * width)
    return out


# --------------------------------------------------------------------------------------------
# Generator (SiT)
# --------------------------------------------------------------------------------------------
def generator_geometry(state: dict, path) -> dict:
    need = ("x_embedder.weight", "pos_embed", "y_embedder.embedding_table.weight", "final_layer.linear.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise OfficialWeightsError(f"{path}: missing {', '.join(missing)}; not a complete official SiT on 1D "
                                   "latents (vae_1d), or the file is truncated")
    x_w = state["x_embedder.weight"]
    if x_w.dim() != 2:
        raise OfficialWeightsError(f"{path}: x_embedder.weight has shape {tuple(x_w.shape)}: a SiT on 2D patches, "
                                   "not on MAETok's 1D latents (vae_1d)")
    in_channels, out_channels = x_w.shape[1], state["final_layer.linear.weight"].shape[0]
    if out_channels != in_channels:
        raise OfficialWeightsError(
            f"{path}: final_layer.linear predicts {out_channels} channels for {in_channels}-channel latents (a "
            "learn_sigma SiT); our SiT predicts the velocity only (H channels)")
    return {"num_tokens": state["pos_embed"].shape[1], "latent_dim": in_channels,
            "num_classes": state["y_embedder.embedding_table.weight"].shape[0] - 1,
            "hidden_size": x_w.shape[0], "depth": len({k.split(".")[1] for k in state if k.startswith("blocks.")})}


def convert_generator(state: dict, base: C.GeneratorConfig, path="official SiT") -> tuple[dict, C.GeneratorConfig,
                                                                                       dict]:
    """Official SiT state dict -> (our state dict, its GeneratorConfig (`base` with the matching size), geometry)."""
    from maetok.models.io import build_generator
    from maetok.models.sit import SiT_models

    check_kind(state, "generator", path)
    geo = generator_geometry(state, path)
    renamed, origin, _ = _split(state, GENERATOR_MAP, (), path, "SiT")

    def build(size):
        return build_generator(dataclasses.replace(_registry_only(base), size=size), geo["num_tokens"],
                               geo["latent_dim"], geo["num_classes"])

    describe = ("a SiT {hidden_size} wide x {depth} blocks on {num_tokens} tokens of {latent_dim} channels, "
                "{num_classes} classes").format(**geo)
    size, target = _match(renamed, origin, GENERATOR_MAP, build, SiT_models, path, describe)
    return _fit(renamed, target), dataclasses.replace(_registry_only(base), size=size), geo


def _latent_stats(tokenizer: str | Path | None, mean: float | None, std: float | None, latent_dim: int,
                  num_tokens: int, num_classes: int):
    """LatentStats of the official scalar normalisation: explicit mean/std, else the vq_mean / vq_std the
    tokenizer import read from the official config.json; with the tokenizer file's sha256 (or "")."""
    from maetok.latents import LatentStats

    sha, recorded = "", {}
    if tokenizer:
        from maetok.models.io import load_tokenizer

        model, _, info = load_tokenizer(tokenizer)
        if (model.num_latent_tokens, model.latent_dim) != (num_tokens, latent_dim):
            raise OfficialWeightsError(
                f"tokenizer {tokenizer} makes latents (L, H) = ({model.num_latent_tokens}, {model.latent_dim}), the "
                f"SiT was trained on ({num_tokens}, {latent_dim}): pass the tokenizer this SiT belongs to")
        sha, recorded = sha256_file(tokenizer), info.get("official", {})
    mean = recorded.get("vq_mean") if mean is None else mean
    std = recorded.get("vq_std") if std is None else std
    if mean is None or std is None:
        raise OfficialWeightsError(
            "the latent normalisation of the official SiT is unknown: pass --latent-mean and --latent-std (vq_mean "
            "and vq_std of the tokenizer's config.json), or --tokenizer with a tokenizer imported with "
            "--official-config (in the workflow: the generator variant's `weights.latent_mean` / `latent_std`, or "
            "the tokenizer variant's `weights.config`, in params.yaml)")
    raw = {"mean": mean, "std": std, "channel_mean": [mean] * latent_dim, "channel_std": [std] * latent_dim}
    return LatentStats(mean, std, tuple(raw["channel_mean"]), tuple(raw["channel_std"]), num_tokens, latent_dim,
                       num_classes, sha, raw)


def import_generator(src: str | Path, out: str | Path, base: C.GeneratorConfig, tokenizer: str | Path | None = None,
                     latent_mean: float | None = None, latent_std: float | None = None,
                     state_key: str | None = None) -> dict:
    """Convert a released SiT file into our generator file `out` (the EMA weights file of `train_generator`)."""
    from maetok.models.io import build_generator, save_weights, weights_metadata

    state, source = read_official(src, state_key)
    ours, cfg, geo = convert_generator(state, base, src)
    stats = _latent_stats(tokenizer, latent_mean, latent_std, geo["latent_dim"], geo["num_tokens"],
                          geo["num_classes"])
    model = build_generator(cfg, geo["num_tokens"], geo["latent_dim"], geo["num_classes"])
    model.load_state_dict(ours)
    meta = weights_metadata(cfg, stats, source.get("step", 0))
    meta["official"] = json.dumps(source)
    save_weights(model, out, meta)
    return {"size": cfg.size, **geo, "latent_mean": stats.mean, "latent_std": stats.std,
            "tokenizer_sha256": stats.tokenizer_sha256, "source": source}


def export_generator(model) -> dict[str, torch.Tensor]:
    """Our SiT -> a state dict in the official `SiT` layout (the same names)."""
    state = model.state_dict()
    extra = [k for k in state if rename(k, GENERATOR_MAP, to_ours=False) is None]
    if extra:
        raise OfficialWeightsError(f"{_preview(extra)} have no official counterpart: the official SiT has no "
                                   "LightningDiT switches (RoPE, SwiGLU, RMSNorm, qk-norm)")
    return dict(state)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def write_official(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """An official-layout state dict, atomically: .safetensors (as released), or .bin / .pt / .pth (torch.save)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise OfficialWeightsError(f"{path}: unknown file type; use one of {', '.join(SUFFIXES)}")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".safetensors":
            save_file(state, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(state, tmp)


def export_weights(kind: str, src: str | Path, out: str | Path) -> int:
    """Our tokenizer / generator file `src` -> the official layout at `out`; returns the number of tensors."""
    if kind == "tokenizer":
        from maetok.models.io import load_tokenizer

        state = export_tokenizer(load_tokenizer(src)[0])
    else:
        from maetok.models.io import load_generator

        state = export_generator(load_generator(src)[0])
    write_official(state, out)
    return len(state)
