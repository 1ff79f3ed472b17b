"""`maetok import-mlflow`: backfill MLflow runs from the metrics JSONs of a results tree.

The JSONs are the source of truth; MLflow is a view of them (docs/tracking.md). A job
whose MLflow logging failed (tracking server down, no network on a compute node) still
wrote its JSON, and this command gives it a run, tagged like a live one (scale, stage,
variant, tables) plus the JSON's path and sha256 (`maetok.source`, `maetok.source_sha256`).

Idempotent: a JSON is skipped when a run already carries its sha256, or when a finished
live run of the same job (same scale, stage, variant, tokenizer) logged the same metric
values; such a run is adopted (given the source tags), so the next import skips it at once.
The `tables` tag of an imported run lists the tables (table_specs.yaml) that use its
variant; figures are not listed (their lists live in workflow/rules/analysis.smk).
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from maetok import tracking

IMPORTED_TAG = "maetok.imported"


@dataclass(frozen=True)
class Kind:
    pattern: str   # glob under the results tree
    stage: str     # the `stage` tag of the job's live run


# Each metrics JSON of the pipeline and the job that writes it (workflow/rules/*.smk).
KINDS = (
    Kind("aux_models/*.json", "train_standin"),
    Kind("tokenizer/*/stage1.json", "tokenizer_stage1"),
    Kind("tokenizer/*/final.json", "tokenizer_stage2"),
    Kind("tokenizer/*/recon.json", "eval_reconstruction"),
    Kind("generator/*/*/loss_curve.json", "train_generator"),
    Kind("generator/*/*/*cfg*.json", "eval_generation"),  # nocfg, cfg, step<N>_*cfg, cfg<scale>_<low>-<high>
    Kind("analysis/*/gmm.json", "fit_gmm"),
    Kind("analysis/*/probe.json", "linear_probe"),
)


def job_tags(rel: Path, stage: str) -> dict:
    """Identity tags of the job that wrote `rel` (a path relative to results/<scale>), as it tags its live run."""
    if stage == "train_standin":
        return {"variant": rel.stem.replace("_", "-")}  # the role, as `maetok train-standin --role` spells it
    if rel.parts[0] == "generator":
        return {"variant": rel.parts[2], "tokenizer": rel.parts[1]}
    return {"variant": rel.parts[1]}


def numeric_leaves(obj, prefix: str = "") -> dict[str, float]:
    """Finite numbers of a JSON object, keys joined with dots (lists and strings are not metrics)."""
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(numeric_leaves(v, key + "."))
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def string_leaves(obj: dict) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in obj.items() if isinstance(v, str)}


def _read(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _close(logged: float, written: float) -> bool:
    """Equal up to the rounding of the JSON (jobs often write e.g. `round(seconds, 1)` and log the raw value)."""
    text = repr(written)
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else None
    tol = 0.5 * 10.0 ** -decimals if decimals is not None else 0.0
    return abs(logged - written) <= tol + 1e-6 * abs(written)


def _same_metrics(logged: dict, metrics: dict) -> bool:
    common = set(logged) & set(metrics)
    return bool(common) and all(_close(logged[k], metrics[k]) for k in common)


def _quote(v: str) -> str:
    return v.replace("'", "\\'")


def find_run(client, exp_id: str, tags: dict, sha: str, metrics: dict):
    """('imported'|'live', run) if this JSON already has a run, else (None, None)."""
    hit = client.search_runs([exp_id], f"tags.`{tracking.SOURCE_SHA_TAG}` = '{sha}'", max_results=1)
    if hit:
        return "imported", hit[0]
    where = " and ".join(f"tags.{k} = '{_quote(v)}'" for k, v in tags.items() if k in ("scale", "stage", "variant",
                                                                                         "tokenizer"))
    for run in client.search_runs([exp_id], f"{where} and attributes.status = 'FINISHED'", max_results=200):
        if tracking.SOURCE_SHA_TAG not in run.data.tags and _same_metrics(run.data.metrics, metrics):
            return "live", run
    return None, None


def tables_of(tags: dict) -> str:
    """The tables that use this job's variant (tokenizer; plus generator for generator jobs)."""
    from maetok import config as C
    from maetok.report.tables import TABLES, get_spec, row_runs

    if tags["stage"] == "train_standin":
        return ""
    tok, gen = tags.get("tokenizer", tags["variant"]), tags["variant"] if "tokenizer" in tags else None
    scale = tags.get("scale") or "tiny"
    params = C.load_params(C.DEFAULT_PARAMS, {"scale": scale})
    # a row reads the runs of the first variant that is the same run at this scale (row_runs)
    ids = [t for t in TABLES if any(run[0] == tok and (gen is None or run[1] == gen)
                                    for run in (row_runs(r, params, scale) for _, r in get_spec(t).our_rows()))]
    return f",{','.join(ids)}," if ids else ""


def import_results(results: Path, scale: str) -> dict[str, int]:
    """Give every metrics JSON under `results` (= results/<scale>) a run; returns counts by outcome."""
    import mlflow

    exp_id = tracking.use_experiment(mlflow)
    client = mlflow.MlflowClient()
    counts = {"imported": 0, "already imported": 0, "live run adopted": 0, "unreadable": 0}
    for kind in KINDS:
        for path in sorted(results.glob(kind.pattern)):
            obj = _read(path)
            if obj is None:
                warnings.warn(f"{path}: not a JSON object; skipped", stacklevel=2)
                counts["unreadable"] += 1
                continue
            rel = path.relative_to(results)
            tags = {"scale": scale, "stage": kind.stage, **job_tags(rel, kind.stage)}
            metrics, source = numeric_leaves(obj), tracking.source_tags(path)
            found, run = find_run(client, exp_id, tags, source[tracking.SOURCE_SHA_TAG], metrics)
            if found == "imported":
                counts["already imported"] += 1
                continue
            if found == "live":
                for k, v in source.items():
                    client.set_tag(run.info.run_id, k, v)
                counts["live run adopted"] += 1
                continue
            _create_run(client, exp_id, path, {**tags, "tables": tables_of(tags), **source, IMPORTED_TAG: "true"},
                        metrics, string_leaves(obj))
            counts["imported"] += 1
    return counts


def _create_run(client, exp_id: str, path: Path, tags: dict, metrics: dict, params: dict) -> None:
    from mlflow.entities import Metric, Param

    t = int(path.stat().st_mtime * 1000)  # when the job finished, not when it was imported
    tags = tracking.run_tags(tags)
    name = f"{tags['variant']}/{tags['stage']}" + (f"/{path.stem}" if tags["stage"] == "eval_generation" else "")
    run = client.create_run(exp_id, start_time=t, tags=tags, run_name=name)
    items = [Metric(k, v, t, 0) for k, v in metrics.items()]
    for i in range(0, max(len(items), 1), 500):
        client.log_batch(run.info.run_id, metrics=items[i:i + 500],
                         params=[Param(k, v) for k, v in params.items()] if i == 0 else [])
    client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED", end_time=t)


def cmd_import_mlflow(args) -> int:
    from maetok import config as C

    results = Path(args.results or f"results/{C.load_params(args.params).scale}")
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no such results directory (run the pipeline first, or pass --results)")
    counts = import_results(results, args.scale or results.name)
    print(f"import-mlflow {results} -> {tracking.tracking_uri()}: "
          + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("import-mlflow", help="backfill MLflow runs from the metrics JSONs (idempotent)",
                       description="Create an MLflow run for every metrics JSON under --results that has none "
                       "(e.g. MLflow was unreachable when the job ran). Store: $MLFLOW_TRACKING_URI, else "
                       f"{tracking.DEFAULT_URI}.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", help="results tree of one scale (default: results/<scale of --params>)")
    p.add_argument("--scale", help="the `scale` tag (default: the name of --results)")
    p.add_argument("--params", default="params.yaml", help="params.yaml, for the default --results")
    p.set_defaults(func=cmd_import_mlflow)
