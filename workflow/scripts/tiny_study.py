"""Table 1a rows across study arms and seeds, with the latent-space measures behind the paper's claim
(§2, Fig. 2a, 5): rFID, PSNR, gFID of SiT-L without CFG at each kept generator step, the gap gFID - rFID,
linear-probe accuracy and GMM NLL; then, per arm and seed, whether MAETok beats the AE on each measure.

    python workflow/scripts/tiny_study.py [--arm NAME:SEED=RESULTS ...] [--out docs/tiny_study_table.md]
                                          [--figure docs/figures/tiny_study_gfid.png]

Each `--arm` names one pipeline run (a checkout's `results/tiny`); without one, `baseline:0=results/tiny`.
A row is read when its files exist; an arm that leaves a row unchanged (the AE and VAE rows of an arm that
only changes masking) need not build it, and is compared with the first arm's row of the same seed,
marked as shared. `--figure` draws gFID against generator steps (Fig. 5b's axes) for each arm and seed,
with each row's rFID, the floor its gFID approaches, as a dashed line. The arms, and the commands that
build them (workflow/study/run_arm.sh): docs/tiny_study.md.
Every number is read from the metrics JSONs the pipeline wrote.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROWS = (("VAE", "vae"), ("AE", "ae"), ("AE+MM", "ae_mm"), ("AE+MM+FT (MAETok)", "maetok"))
GENERATOR = "sit_l"
STEPS = (200, 400)     # the EMAs the tiny SiT-L keeps before its last step (generator.eval_steps)
GMM_K = 10             # one component per Fashion-MNIST class; the JSON holds every K of the sweep
# measure -> True when higher is better (the direction of the paper's claim, Table 1a, Fig. 2a / 5a)
CLAIMS = {"gFID": False, "probe acc": True, f"GMM NLL K={GMM_K}": False}


def paths(results: Path, tok: str) -> dict[str, Path]:
    gen = results / "generator" / tok / GENERATOR
    out = {"recon": results / "tokenizer" / tok / "recon.json", "gfid": gen / "nocfg.json",
           "curve": gen / "loss_curve.json",
           "probe": results / "analysis" / tok / "probe.json", "gmm": results / "analysis" / tok / "gmm.json"}
    out |= {f"gfid@{s}": gen / f"step{s}_nocfg.json" for s in STEPS}
    return out


def row(results: Path, tok: str) -> dict[str, float] | None:
    """The row's measures, None when the arm did not build it; an error when it built only part of it."""
    files = paths(results, tok)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if len(missing) == len(files):
        return None
    if missing:
        sys.exit(f"missing: {' '.join(missing)}\nbuild them in that checkout: "
                 f"snakemake --profile profiles/laptop {' '.join(missing)}")
    j = {k: json.loads(p.read_text()) for k, p in files.items()}
    nll = {r["k"]: r["nll_heldout"] for r in j["gmm"]["results"]}
    out = {"rFID": j["recon"]["rfid"], "PSNR": j["recon"]["psnr"]}
    out |= {f"gFID@{s}": j[f"gfid@{s}"]["gfid"] for s in STEPS}
    out |= {"gFID": j["gfid"]["gfid"], "gFID-rFID": j["gfid"]["gfid"] - j["recon"]["rfid"],
            "probe acc": j["probe"]["val_acc"], f"GMM NLL K={GMM_K}": nll.get(GMM_K, math.nan)}
    return out


def last_step(results: Path, tok: str) -> int:
    """The generator's last logged step: the step of the final EMA that nocfg.json scores."""
    return max(json.loads(paths(results, tok)["curve"].read_text())["step"])


def parse_arm(spec: str) -> tuple[str, int, Path]:
    try:
        name_seed, path = spec.split("=", 1)
        name, seed = name_seed.split(":")
        return name, int(seed), Path(path)
    except ValueError:
        raise SystemExit(f"--arm {spec!r}: expected NAME:SEED=RESULTS, e.g. baseline:0=results/tiny") from None


def collect(arms: list[tuple[str, int, Path]]) -> list[dict]:
    """One record per (arm, seed, row) built; rows an arm left out come from the first arm, same seed."""
    records, first = [], arms[0][0]
    for name, seed, results in arms:
        for label, tok in ROWS:
            m = row(results, tok)
            if m is None:
                base = [r for r in records if (r["arm"], r["seed"], r["tok"]) == (first, seed, tok)]
                if base:
                    records.append(base[0] | {"arm": name, "shared": True})
                continue
            records.append({"arm": name, "seed": seed, "label": label, "tok": tok, "m": m, "shared": False,
                            "last_step": last_step(results, tok)})
    if not records:
        raise SystemExit("no arm holds a built row; build one first (docs/tiny_study.md)")
    return records


def fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.3f}"


def table(records: list[dict]) -> list[str]:
    cols = list(records[0]["m"])
    lines = ["| arm | seed | row | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for r in records:
        label = f"{r['label']} (shared)" if r["shared"] else r["label"]
        lines.append(f"| {r['arm']} | {r['seed']} | {label} | " + " | ".join(fmt(v) for v in r["m"].values()) + " |")
    return lines


def claims(records: list[dict]) -> list[str]:
    """MAETok against the AE of the same arm and seed: the difference and whether it has the paper's sign."""
    heads = " | ".join(f"MAETok - AE: {c}" for c in CLAIMS)
    lines = [f"| arm | seed | {heads} |", "|---|---|" + "---|" * len(CLAIMS)]
    for arm, seed in dict.fromkeys((r["arm"], r["seed"]) for r in records):
        by_tok = {r["tok"]: r["m"] for r in records if (r["arm"], r["seed"]) == (arm, seed)}
        if not {"ae", "maetok"} <= set(by_tok):
            continue
        cells = []
        for c, higher in CLAIMS.items():
            d = by_tok["maetok"][c] - by_tok["ae"][c]
            cells.append(f"{d:+.3f} ({'holds' if (d > 0) == higher else 'does not hold'})")
        lines.append(f"| {arm} | {seed} | " + " | ".join(cells) + " |")
    return lines


def figure(records: list[dict], out: Path) -> None:
    """gFID against generator steps, one panel per arm and seed, each row's rFID dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["arm"], r["seed"]) for r in records))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), sharey=True, squeeze=False)
    colours = dict(zip((tok for _, tok in ROWS), plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for ax, (arm, seed) in zip(axes[0], panels, strict=True):
        for r in (r for r in records if (r["arm"], r["seed"]) == (arm, seed)):
            c = colours[r["tok"]]
            ax.plot([*STEPS, r["last_step"]], [*(r["m"][f"gFID@{s}"] for s in STEPS), r["m"]["gFID"]],
                    "o-", color=c, label=r["label"])
            ax.axhline(r["m"]["rFID"], color=c, ls="--", lw=0.8)
        ax.set(title=f"{arm}, seed {seed}", xlabel="generator step")
    axes[0][0].set_ylabel("gFID (dashed: rFID)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", action="append", type=parse_arm, metavar="NAME:SEED=RESULTS",
                   help="one run of the study (repeatable); default baseline:0=results/tiny")
    p.add_argument("--out", type=Path, help="also write the markdown tables here")
    p.add_argument("--figure", type=Path, help="also draw gFID against generator steps here (PNG)")
    args = p.parse_args()
    records = collect(args.arm or [("baseline", 0, Path("results/tiny"))])
    text = "\n".join(table(records) + [""] + claims(records)) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    if args.figure:
        figure(records, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
