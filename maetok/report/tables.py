"""Rebuild the paper's tables with our value beside the paper's (`maetok make-table`).

Which run sits beside which paper row is written once, as data, in `table_specs.yaml`;
the paper's numbers come from `paper_tables/*.csv` (`paper.py`). Our numbers are read from
the metrics JSONs of the pipeline (the source of truth for tables), found under `results`:

    recon.*   {results}/tokenizer/<tok>/recon.json          rule eval_reconstruction
    nocfg.*   {results}/generator/<tok>/<gen>/nocfg.json    rule eval_generation
    cfg.*     {results}/generator/<tok>/<gen>/cfg.json      rule eval_generation

Every paper row appears once in the output with a `source`: `ours` (our run beside the
paper's row), `cited` (a result the paper cites from other work: kept as printed, never
recomputed), or `paper` (the paper's own result that this pipeline does not reproduce,
e.g. 512x512 runs).
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from maetok import config as C
from maetok.report.paper import paper_columns, read_paper_table
from maetok.utils.io import write_text

SPEC_PATH = Path(__file__).resolve().parent / "table_specs.yaml"
JSON_FILES = {"recon": "tokenizer/{tok}/recon.json", "nocfg": "generator/{tok}/{gen}/nocfg.json",
              "cfg": "generator/{tok}/{gen}/cfg.json", "guided": "generator/{tok}/{gen}/{guidance}.json"}
JSON_RULES = {"recon": "eval_reconstruction", "nocfg": "eval_generation", "cfg": "eval_generation",
              "guided": "eval_generation"}
SOURCES = ("ours", "cited", "paper")


class ReportError(ValueError):
    """A table cannot be built (bad spec, missing or malformed metrics); the message says what to do."""


class MissingMetricError(ReportError):
    pass


@dataclass(frozen=True)
class OurRow:
    tokenizer: str
    generator: str | None
    paper_row: int
    guidance: str = ""                 # the CFG setting of `guided.*` metrics, e.g. "cfg1.9_0-0.75"


@dataclass(frozen=True)
class Part:
    name: str                          # "a", "b", ... or "" for a table without parts
    title: str
    paper_csv: str
    label: str                         # str.format template over the paper CSV row
    keep: tuple[str, ...]
    metrics: dict[str, str | None]     # our column -> "<json>.<key path>" (None: not reproduced)
    guidance: str                      # template over the paper CSV row naming the CFG setting of `guided.*`
    ours: tuple[OurRow, ...]
    paper_rows: frozenset[int]         # the paper's own rows that we do not reproduce
    notes: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    parts: tuple[Part, ...]
    notes: tuple[str, ...]
    released: bool = False             # rows of the authors' released weights: paper scale, on request only

    @property
    def has_parts(self) -> bool:
        return any(p.name for p in self.parts)

    @property
    def metric_columns(self) -> list[str]:
        return list(dict.fromkeys(m for p in self.parts for m in p.metrics))

    @property
    def keep_columns(self) -> list[str]:
        return list(dict.fromkeys(k for p in self.parts for k in p.keep))

    def our_rows(self):
        return [(part, row) for part in self.parts for row in part.ours]


# --------------------------------------------------------------------------- spec
def _part(table: str, name: str, raw: dict, defaults: dict) -> Part:
    where = f"{SPEC_PATH.name}: {table}" + (f" part {name}" if name else "")
    raw = {**defaults, **raw}
    unknown = set(raw) - {"title", "paper_csv", "label", "keep", "generator", "guidance", "metrics", "ours",
                          "paper_rows", "notes"}
    if unknown:
        raise ReportError(f"{where}: unknown keys {sorted(unknown)}")
    csv_name = raw["paper_csv"]
    columns = paper_columns(csv_name)
    paper = {int(r["row"]): r for r in read_paper_table(csv_name)}
    rows = set(paper)
    metrics = dict(raw["metrics"])
    for col, src in metrics.items():
        if col not in columns:
            raise ReportError(f"{where}: metric column {col!r} is not a column of {csv_name}")
        if src is not None and src.split(".")[0] not in JSON_FILES:
            raise ReportError(f"{where}: metric {col}: source {src!r} must start with one of {list(JSON_FILES)}")
    for k in raw.get("keep", []):
        if k not in columns:
            raise ReportError(f"{where}: keep column {k!r} is not a column of {csv_name}")
    needs_gen = any(s and s.split(".")[0] != "recon" for s in metrics.values())
    guided = any(s and s.split(".")[0] == "guided" for s in metrics.values())
    if guided and not raw.get("guidance"):
        raise ReportError(f"{where}: `guided.*` metrics need a `guidance` template, e.g. "
                          "\"cfg{cfg_scale}_{cfg_interval_low}-{cfg_interval_high}\"")
    ours = []
    for r in raw.get("ours") or []:
        n = int(r["paper_row"])
        if n not in rows:
            raise ReportError(f"{where}: {csv_name} has no row {n}")
        try:
            guidance = raw["guidance"].format(**paper[n]) if guided else ""
        except KeyError as e:
            raise ReportError(f"{where}: guidance template {raw['guidance']!r} names {e}, not a column of "
                              f"{csv_name}") from None
        row = OurRow(r["tokenizer"], r.get("generator", raw.get("generator")), n, guidance)
        if needs_gen and not row.generator:
            raise ReportError(f"{where}: row {row.paper_row} needs a generator (its metrics include generation)")
        ours.append(row)
    matched = [r.paper_row for r in ours]
    if len(set(matched)) != len(matched):
        raise ReportError(f"{where}: a paper row has two rows of ours: {matched}")
    own = raw.get("paper_rows") or []
    own = rows if own == "all" else {int(x) for x in own}
    if own - rows or own & set(matched):
        raise ReportError(f"{where}: paper_rows {sorted(own)} must be rows of {csv_name} without a row of ours")
    return Part(name, raw.get("title", ""), csv_name, raw["label"], tuple(raw.get("keep", [])), metrics,
                raw.get("guidance", ""), tuple(ours), frozenset(own), tuple(raw.get("notes", [])))


@functools.cache
def load_specs(path: str | Path = SPEC_PATH) -> dict[str, TableSpec]:
    """Every table of `table_specs.yaml`, checked against the paper CSVs."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    specs = {}
    for table, t in raw.items():
        inherit = {k: t[k] for k in ("generator", "metrics", "paper_csv", "label", "keep") if k in t}
        if "parts" in t:
            parts = tuple(_part(table, name, p, inherit) for name, p in t["parts"].items())
            notes = tuple(t.get("notes", []))
        else:
            parts = (_part(table, "", {k: v for k, v in t.items() if k not in ("title", "released_weights")}, {}),)
            notes = ()
        specs[table] = TableSpec(table, t["title"], parts, notes, bool(t.get("released_weights", False)))
    return specs


# The tables of `rule all` and dvc.yaml; RELEASE_TABLES are built from the authors' released weights,
# at paper scale and only on request (they need the downloads of docs/official_weights.md).
TABLES = tuple(name for name, spec in load_specs().items() if not spec.released)
RELEASE_TABLES = tuple(name for name, spec in load_specs().items() if spec.released)


def get_spec(table: str) -> TableSpec:
    specs = load_specs()
    if table not in specs:
        raise ReportError(f"unknown table {table!r}; tables: {', '.join(specs)}")
    return specs[table]


def check_scale(spec: TableSpec, scale: str) -> None:
    """A table of released weights exists at paper scale only (the released models are ImageNet models)."""
    if spec.released and scale != "paper":
        raise ReportError(f"{spec.name} is built from the authors' released weights, at paper scale only: "
                          f"`snakemake --config scale=paper --cores all tables/{spec.name}.csv` after the downloads "
                          "of docs/official_weights.md")


# --------------------------------------------------------------------------- inputs
def metric_json(results: str | Path, kind: str, tok: str, gen: str | None, guidance: str = "") -> str:
    return f"{results}/{JSON_FILES[kind].format(tok=tok, gen=gen, guidance=guidance)}"


def row_guidance(row: OurRow, params: C.Params, scale: str) -> str:
    """The eval_generation name of a `guided.*` row: its CFG setting, on the EMA of step
    `cfg_sweep.generator_step` when one is set (Table 12: SiT-XL after 2M of 4M steps)."""
    step = params.scales[scale].cfg_sweep.generator_step
    if not row.guidance or step is None:
        return row.guidance
    kept = params.generator(row.generator, scale).eval_steps
    if step not in kept:
        raise ReportError(f"scales.{scale}.cfg_sweep.generator_step: {step} is not one of the steps whose EMA "
                          f"generator variant {row.generator!r} keeps at scale {scale} (eval_steps {list(kept)}), so "
                          f"the CFG sweep cannot sample it: add {step} to the `eval_steps` of generator_variants."
                          f"{row.generator} at scale {scale} in params.yaml, or set `cfg_sweep.generator_step: null` "
                          "(the final EMA)")
    return f"step{step}_{row.guidance}"


def check_params(params: C.Params, specs: dict[str, TableSpec] | None = None) -> None:
    """Raise ReportError, naming the table and the params.yaml key, where a table cannot be built
    from `params` at either scale: a row's variant missing from `tokenizer_variants` /
    `generator_variants`, or a CFG-sweep step its generator does not keep. The workflow calls this
    at load (common.smk), so such a table stops `snakemake -n`, not a job's input function."""
    for spec in (specs or load_specs()).values():
        for part, row in spec.our_rows():
            where = f"maetok/report/{SPEC_PATH.name}: {spec.name}{part.name} (paper row {row.paper_row})"
            for kind, name, defined in (("tokenizer", row.tokenizer, params.tokenizer_variants),
                                        ("generator", row.generator, params.generator_variants)):
                if name is not None and name not in defined:
                    near = difflib.get_close_matches(name, list(defined), n=1)
                    hint = f" (did you mean {near[0]!r}?)" if near else ""
                    raise ReportError(f"{where} uses {kind} variant {name!r}, which params.yaml `{kind}_variants` "
                                      f"does not define{hint}: add it to `{kind}_variants`, or make the row "
                                      "name a defined variant")
            for scale in C.SCALES:
                row_guidance(row, params, scale)


def row_runs(row: OurRow, params: C.Params, scale: str) -> tuple[str, str | None]:
    """The (tokenizer, generator) variants whose runs a row reads at `scale`: a variant that is the same
    run as an earlier one there (`Params.same_runs`: maetok_main is maetok and sit_xl is sit_l at tiny)
    reads that one's files, so the workflow trains, samples and evaluates it once."""
    tok = params.same_runs("tokenizer", scale)[row.tokenizer]
    gen = params.same_runs("generator", scale)[row.generator] if row.generator else None
    return tok, gen


def _row_jsons(part: Part, row: OurRow, results: str | Path, params: C.Params, scale: str) -> dict[str, str]:
    kinds = dict.fromkeys(src.split(".")[0] for src in part.metrics.values() if src)
    guidance = row_guidance(row, params, scale)
    tok, gen = row_runs(row, params, scale)
    return {k: metric_json(results, k, tok, gen, guidance) for k in kinds}


def inputs_for(table: str, scale: str, results: str | Path | None = None, params: C.Params | None = None) -> list[str]:
    """The metrics JSONs `table` needs at `scale` (each once), e.g. for a Snakemake input function."""
    check_scale(get_spec(table), scale)
    results = results or f"results/{scale}"
    params = params or C.load_params(C.DEFAULT_PARAMS, {"scale": scale})
    paths = [p for part, row in get_spec(table).our_rows()
             for p in _row_jsons(part, row, results, params, scale).values()]
    return list(dict.fromkeys(paths))


# --------------------------------------------------------------------------- values
def _load_json(path: str, kind: str, table: str) -> dict:
    if not Path(path).is_file():
        raise MissingMetricError(
            f"{table}: metrics file {path} is missing; it is built by rule {JSON_RULES[kind]}: "
            f"`snakemake --cores all {path}` (or build the whole table: `snakemake --cores all tables/{table}.csv`)")
    with open(path) as f:
        return json.load(f)


def _lookup(obj: dict, key: str, path: str, table: str) -> float:
    value = obj
    for k in key.split("."):
        if not isinstance(value, dict) or k not in value:
            raise MissingMetricError(f"{table}: {path} has no metric {key!r} (keys: {sorted(obj)}); rebuild it with "
                                     f"`snakemake --cores all --forcerun {path}`")
        value = value[k]
    if not isinstance(value, int | float):
        raise MissingMetricError(f"{table}: {path}: metric {key!r} is {value!r}, not a number")
    return float(value)


def _fmt_ours(v: float) -> str:
    return "nan" if math.isnan(v) else repr(round(v, 4))


def collect_rows(table: str, results: str | Path, scale: str, params: C.Params | None = None) -> list[dict[str, str]]:
    """One dict per output row (every paper row once, ours beside it); raises on a missing metric."""
    spec = get_spec(table)
    params = params or C.load_params(C.DEFAULT_PARAMS, {"scale": scale})
    out = []
    for part in spec.parts:
        ours = {r.paper_row: r for r in part.ours}
        for prow in read_paper_table(part.paper_csv):
            n = int(prow["row"])
            row = {"part": part.name, "paper_row": str(n), "label": part.label.format(**prow)}
            row |= {k: prow.get(k, "") for k in spec.keep_columns}
            row |= {"tokenizer": "", "generator": "", "guidance": ""}
            for col in spec.metric_columns:
                row[col] = ""
                row[f"{col}_paper"] = prow.get(col, "") if col in part.metrics else ""
            if n in ours:
                r = ours[n]
                jsons = _row_jsons(part, r, results, params, scale)
                loaded = {k: _load_json(p, k, table) for k, p in jsons.items()}
                for col, src in part.metrics.items():
                    if src:
                        kind, key = src.split(".", 1)
                        row[col] = _fmt_ours(_lookup(loaded[kind], key, jsons[kind], table))
                uses_gen = [Path(jsons[k]).stem if k == "guided" else k for k in jsons if k != "recon"]
                row |= {"tokenizer": r.tokenizer, "generator": r.generator if uses_gen else "",
                        "guidance": "+".join(uses_gen), "source": "ours"}
            else:
                row["source"] = "paper" if n in part.paper_rows else "cited"
            row["scale"] = scale
            out.append(row)
    return out


def csv_columns(spec: TableSpec) -> list[str]:
    cols = (["part"] if spec.has_parts else []) + ["paper_row", "label", *spec.keep_columns,
                                                   "tokenizer", "generator", "guidance"]
    for m in spec.metric_columns:
        cols += [m, f"{m}_paper"]
    return cols + ["source", "scale"]


# --------------------------------------------------------------------------- footnotes
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST (grey, 28x28 zero-padded, replicated to RGB)",
                 "imagefolder": "ImageNet-1k"}
OOD_NAMES = {"digits": "scikit-learn's 8x8 digits (upsampled)", "coco": "COCO val2017"}


def cfg_setting(params: C.Params, gen: str, scale: str) -> str:
    """"`gen` scale 1.9 on [0.0, 0.75] (paper ...)": the w/ CFG setting of a generator variant."""
    a, p = params.sampling(gen, scale), params.sampling(gen, "paper")
    return (f"`{gen}` scale {a.cfg_scale} on [{a.cfg_interval_low}, {a.cfg_interval_high}] (paper "
            f"{p.cfg_scale} on [{p.cfg_interval_low}, {p.cfg_interval_high}])")


def _tokenizer_note(params: C.Params, toks: list[str], scale: str) -> str:
    """The footnote of `scale_notes` on the stand-in tokenizer: size, latent shape, training length and
    the loss weights that differ from the paper's, for the tokenizer variants `toks` of a table."""
    at, pt = params.scales[scale].tokenizer, params.scales["paper"].tokenizer
    gan = (f"; GAN loss weight {at.loss.disc_weight} (paper {pt.loss.disc_weight})"
           if at.loss.disc_weight != pt.loss.disc_weight else "")
    if (at.loss.perceptual_weight, at.loss.perceptual_stage1) != (pt.loss.perceptual_weight,
                                                                  pt.loss.perceptual_stage1):
        when = ("" if at.loss.perceptual_stage1 else
                f", only in stage 2 or, without one, the last {at.loss.perceptual_last_steps:,} stage-1 steps")
        gan += (f"; perceptual loss weight {at.loss.perceptual_weight}{when} "
                f"(paper {pt.loss.perceptual_weight}, every step)")
    steps = []  # per distinct schedule of this table's tokenizers (maetok_main trains 2x at paper scale)
    for t in toks:
        ta, tp = params.tokenizer(t, scale), params.tokenizer(t, "paper")
        ft = (f" + {ta.finetune.steps:,} decoder fine-tuning" if ta.finetune.enabled else "",
              f" + {tp.finetune.steps:,}" if tp.finetune.enabled else "")
        steps.append(f"{ta.optim.steps:,}{ft[0]} steps (paper {tp.optim.steps:,}{ft[1]})")
    return (f"Tokenizer: {at.model.size} with {at.model.num_latent_tokens} latent tokens x "
            f"{at.model.latent_dim} dims stands in for {pt.model.size} ({pt.model.num_latent_tokens} x "
            f"{pt.model.latent_dim}); training: {' or '.join(dict.fromkeys(steps))}{gan}.")


def scale_notes(spec: TableSpec, params: C.Params, scale: str) -> list[str]:
    """Footnotes naming every stand-in of `scale` that this table's rows of ours depend on.

    Derived by comparing the `scale` block of params.yaml with the `paper` block, so the
    notes follow the params (nothing to write when `scale` is `paper`).
    """
    if scale == "paper" or not spec.our_rows():
        return []
    a, p = params.scales[scale], params.scales["paper"]
    sources = [s for part in spec.parts for s in part.metrics.values() if s]
    uses_recon = any(s.startswith("recon.") for s in sources)
    uses_gen = any(not s.startswith("recon.") for s in sources)
    uses_ood = any(s.startswith("recon.ood.") for s in sources)
    uses_is = any(s.endswith(".is") for s in sources)
    uses_cfg = any(s.startswith("cfg.") for s in sources)
    uses_sweep = any(s.startswith("guided.") for s in sources)
    uses_pr = any(s.endswith((".precision", ".recall")) for s in sources)
    notes = []
    toks = list(dict.fromkeys(r.tokenizer for _, r in spec.our_rows()))
    resolutions = {params.resolution(t) for t in toks}
    if (a.data.dataset, a.data.image_size) != (p.data.dataset, p.data.image_size):
        b, h = a.data.image_size, a.hires.image_size
        sizes = {"base": f"{b}x{b} for {p.data.image_size}x{p.data.image_size}",
                 "hires": f"{h}x{h} (the {b}x{b} images upsampled) for {p.hires.image_size}x{p.hires.image_size}"}
        notes.append(f"Data: {DATASET_NAMES.get(a.data.dataset, a.data.dataset)}, {a.data.num_classes} classes, "
                     f"stands in for {DATASET_NAMES.get(p.data.dataset, p.data.dataset)} ({p.data.num_classes} "
                     f"classes): {'; '.join(v for k, v in sizes.items() if k in resolutions or not resolutions)}.")
    at, pt = a.tokenizer, p.tokenizer
    if (at.model.size, at.optim.steps) != (pt.model.size, pt.optim.steps):
        notes.append(_tokenizer_note(params, toks, scale))
    if at.networks.kind == "standin":
        notes.append("Teachers: the `dino` and `clip` aux targets, the perceptual loss and the discriminator "
                     "backbone use small stand-in CNNs trained on the train split by rule train_standin "
                     "(self-supervised for DINO, label-supervised for CLIP) instead of DINOv2-L, SigLIP, "
                     "LPIPS-VGG and DINOv2-S.")
    gens = sorted({r.generator for _, r in spec.our_rows() if r.generator}) if uses_gen else []
    swapped = []
    for g in gens:
        ga, gp = params.generator(g, scale), params.generator(g, "paper")
        if (ga.size, ga.optim.steps) != (gp.size, gp.optim.steps):
            swapped.append(f"`{g}`: {ga.size}, {ga.optim.steps:,} steps for {gp.size}, {gp.optim.steps:,} steps")
    if swapped:
        notes.append("Generators (stand-in size and length): " + "; ".join(swapped) + ".")
    ea, ep = a.evaluation, p.evaluation
    if ea.feature_network != ep.feature_network and (uses_recon or uses_gen):
        bound = (f" IS is bounded by the evaluator's number of classes ({a.data.num_classes}, not "
                 f"{p.data.num_classes})." if uses_is else "")
        what = "FID" + ("/IS" if uses_is else "") + ("/precision/recall" if uses_pr else "")
        pr = (" (for precision/recall, the paper's ADM suite uses Inception features too; this pipeline "
              "at paper scale uses VGG16)" if uses_pr else "")
        notes.append(f"{what} features: a classifier trained on the train split (rule train_standin, role "
                     f"evaluator; feature_network `{ea.feature_network}`) stands in for Inception-v3{pr}.{bound}")
    if uses_recon and ea.num_recon != ep.num_recon:
        notes.append(f"rFID/PSNR/SSIM on {ea.num_recon:,} validation images (paper {ep.num_recon:,}).")
    sa, sp = a.sampling, p.sampling
    counts = (a.cfg_sweep.num_samples, p.cfg_sweep.num_samples) if uses_sweep else (sa.num_samples, sp.num_samples)
    if uses_gen and (counts[0], sa.num_steps) != (counts[1], sp.num_steps):
        cfg = "; w/ CFG: " + ", ".join(cfg_setting(params, g, scale) for g in gens) if uses_cfg else ""
        per = " per CFG setting" if uses_sweep else ""
        notes.append(f"gFID from {counts[0]:,} generated samples{per} instead of {counts[1]:,}; "
                     f"{sa.num_steps} sampling steps (paper {sp.num_steps}){cfg}.")
    if uses_ood and ea.ood_dataset != ep.ood_dataset:
        notes.append(f"COCO columns: out-of-domain reconstruction on {OOD_NAMES.get(ea.ood_dataset, ea.ood_dataset)}"
                     f" instead of {OOD_NAMES.get(ep.ood_dataset, ep.ood_dataset)}.")
    notes.append(f"At scale `{scale}` our numbers are NOT comparable in absolute value to the paper's (other data, "
                 "resolution, model sizes, training length and feature network): compare the ordering of rows "
                 "within a table, not the values across the ours/paper columns.")
    return notes


def teacher_notes(spec: TableSpec, params: C.Params, scale: str) -> list[str]:
    """A footnote on how the pretrained teachers see the images, where this table's tokenizers have a
    DINO- or CLIP-type aux target at `scale`: the paper does not say, so the choice (params.yaml
    `tokenizer.networks.teacher_input` / `clip_norm`) is stated beside the official code's. None for
    released weights: the authors trained those tokenizers, our teacher settings play no part."""
    if spec.released:
        return []
    geometry = {"official": "their patch embedding resampled to the tokenizer's patch size, at the tokenizer's "
                            "image size, as in the official code",
                "native": "their own patch size, on images resized so that their token grid is the tokenizer's "
                          "(the official code resamples the patch embedding instead)"}
    norm = {"imagenet": "ImageNet mean/std, as in the official code",
            "siglip": "SigLIP's own mean/std of 0.5 (the official code: ImageNet mean/std)"}
    uses_clip: dict[C.NetworksConfig, bool] = {}
    for tok in dict.fromkeys(r.tokenizer for _, r in spec.our_rows()):
        cfg = params.tokenizer(tok, scale)
        if cfg.networks.kind == "pretrained" and {"dino", "clip"} & set(cfg.aux.targets):
            uses_clip[cfg.networks] = uses_clip.get(cfg.networks, False) or "clip" in cfg.aux.targets
    notes = []
    for nets, clip in uses_clip.items():
        text = (f"Teacher inputs, which the paper does not give (params.yaml `tokenizer.networks`, "
                f"docs/deviations.md): with `teacher_input: {nets.teacher_input}` the teachers ({nets.dino_model}, "
                f"{nets.clip_model}) run with {geometry[nets.teacher_input]}")
        if clip:
            text += f"; with `clip_norm: {nets.clip_norm}` the CLIP-type one gets {norm[nets.clip_norm]}"
        notes.append(text + ".")
    return notes


def shared_run_notes(spec: TableSpec, params: C.Params, scale: str) -> list[str]:
    """Footnotes for rows of ours that, at `scale`, are the same run as rows of other tables.

    Two variants that differ only at another scale (maetok_main is maetok trained longer at paper
    scale; sit_xl is sit_l at tiny) have one merged config here. The workflow trains such a
    tokenizer once (`Params.same_runs`); a generator with the same config, seed and
    latents trains to the same weights. The row then repeats another table's numbers, and says so.
    """
    same_tok, same_gen = params.same_runs("tokenizer", scale), params.same_runs("generator", scale)

    def sources(part, row):
        """{(metrics JSON kind, tokenizer run, generator run): (kind, tokenizer, generator) as the row
        names them} of each number the row reads; guided.* metrics are a row's own CFG points."""
        tok, gen = same_tok[row.tokenizer], same_gen[row.generator] if row.generator else None
        kinds = {src.split(".")[0] for src in part.metrics.values() if src} - {"guided"}
        return {(k, tok, None if k == "recon" else gen): (k, row.tokenizer, None if k == "recon" else row.generator)
                for k in kinds}

    notes = []
    for tok in dict.fromkeys(r.tokenizer for _, r in spec.our_rows()):
        if (twin := same_tok[tok]) != tok:
            notes.append(f"At scale `{scale}`, tokenizer `{tok}` has the same config as `{twin}` (they differ "
                         f"at another scale), so its rows read `{twin}`'s runs (results/{scale}/tokenizer/{twin}, "
                         f"latents/{twin}, generator/{twin}/...).")
    for gen in dict.fromkeys(r.generator for _, r in spec.our_rows() if r.generator):
        if (twin := same_gen[gen]) != gen:
            notes.append(f"At scale `{scale}`, generator `{gen}` has the same config and sampling as `{twin}` (they "
                         f"differ at another scale), so its rows read `{twin}`'s runs (results/{scale}/generator/"
                         f"<tokenizer>/{twin}).")
    if not notes:
        return []
    mine = {run: named for p, r in spec.our_rows() for run, named in sources(p, r).items()}
    mine_named = set(mine.values())
    elsewhere: dict[tuple[str, str], str | None] = {}  # (table + part, tokenizer) -> generator, if any
    for other in load_specs().values():
        if other.name == spec.name:
            continue
        for part, r in other.our_rows():
            for run, named in sources(part, r).items():
                if run in mine and named not in mine_named:
                    _, tok, gen = named
                    where = (f"Table {other.name.removeprefix('table')}{part.name}", tok)
                    elsewhere[where] = elsewhere.get(where) or gen
    if elsewhere:
        runs = [f"{where} (`{tok}`" + (f" + `{gen}`" if gen else "") + ")" for (where, tok), gen in elsewhere.items()]
        notes.append(f"These rows repeat numbers of the same runs in {', '.join(runs)}.")
    return notes


# --------------------------------------------------------------------------- output
METRIC_NAMES = {"rfid": "rFID", "gfid": "gFID", "is": "IS", "psnr": "PSNR", "ssim": "SSIM",
                "precision": "Prec.", "recall": "Rec."}


def metric_title(col: str) -> str:
    words = []
    for w in col.split("_"):
        words.append({"nocfg": "w/o CFG", "cfg": "w/ CFG", "imagenet": "ImageNet", "coco": "COCO"}.get(
            w, METRIC_NAMES.get(w, w)))
    return " ".join(words)


def _md_cell(v: str, col: str, ours: list[str]) -> str:
    """Our metric values rounded as the paper prints them; every other cell as it is."""
    if v in ("", "nan") or col not in ours:
        return v
    try:
        x = float(v)
    except ValueError:
        return v
    return f"{x:.3f}" if any(k in col for k in ("ssim", "precision", "recall")) else f"{x:.2f}"


def render_markdown(spec: TableSpec, rows: list[dict[str, str]], scale: str, results: str | Path,
                    notes: list[str]) -> str:
    lines = [f"# {spec.title}", "",
             f"Scale: **{scale}** (metrics from `{results}`). Each metric has two columns: *ours* (this "
             "pipeline) and *paper* (as printed in the paper). `source`: **ours** = our run beside the paper's "
             "row; **cited** = a result the paper cites from other work (kept as printed, never recomputed); "
             "**paper** = the paper's own result, not reproduced here.", ""]
    for part in spec.parts:
        if part.name:
            lines += [f"## {part.title or part.name}", ""]
        metrics = list(part.metrics)
        uses_gen = any(s and not s.startswith("recon.") for s in part.metrics.values())
        header = ["row", *part.keep, "tokenizer", *(["generator"] if uses_gen else [])]
        heads = ["Row", *part.keep, "Tokenizer", *(["Generator"] if uses_gen else [])]
        for m in metrics:
            header += [m, f"{m}_paper"]
            heads += [f"{metric_title(m)} (ours)", f"{metric_title(m)} (paper)"]
        header.append("source")
        heads.append("Source")
        lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for r in rows:
            if r["part"] != part.name:
                continue
            cells = [r["label"]] + [_md_cell(r[c], c, metrics) for c in header[1:]]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
        if part.notes:
            lines += [f"- {n}" for n in part.notes] + [""]
    all_notes = [*spec.notes, *notes]
    if all_notes:
        lines += ["## Notes", ""] + [f"{i}. {n}" for i, n in enumerate(all_notes, 1)] + [""]
    return "\n".join(lines)


def make_table(table: str, results: str | Path, scale: str, out_csv: str | Path, out_md: str | Path,
               params: C.Params | None = None) -> list[dict[str, str]]:
    """Write `out_csv` and `out_md` (atomically) for `table` from the metrics JSONs under `results`."""
    spec = get_spec(table)
    check_scale(spec, scale)
    params = params or C.load_params(C.DEFAULT_PARAMS, {"scale": scale})
    rows = collect_rows(table, results, scale, params)
    cols = csv_columns(spec)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    md = render_markdown(spec, rows, scale, results,
                         scale_notes(spec, params, scale) + teacher_notes(spec, params, scale)
                         + shared_run_notes(spec, params, scale))
    write_text(out_csv, buf.getvalue())
    write_text(out_md, md)
    return rows
