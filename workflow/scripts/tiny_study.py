"""Table 1a rows at one scale, with the latent-space measures behind the paper's claim (§2, Fig. 2a, 5):
rFID, PSNR, gFID of SiT-L without CFG at each kept generator step, linear-probe accuracy and GMM NLL.

    python workflow/scripts/tiny_study.py [--results results/tiny] [--out docs/tiny_study.md]

Every number is read from the metrics JSONs the pipeline wrote; build them first (the command is
printed when one is missing, and listed in docs/tiny_mechanism_rootcause.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROWS = (("VAE", "vae"), ("AE", "ae"), ("AE+MM", "ae_mm"), ("AE+MM+FT (MAETok)", "maetok"))
GENERATOR = "sit_l"
STEPS = (200, 400)     # the EMAs the tiny SiT-L keeps before its last step (generator.eval_steps)
GMM_K = 10             # one component per Fashion-MNIST class; the JSON holds every K of the sweep


def paths(results: Path, tok: str) -> dict[str, Path]:
    gen = results / "generator" / tok / GENERATOR
    out = {"recon": results / "tokenizer" / tok / "recon.json", "gfid": gen / "nocfg.json",
           "probe": results / "analysis" / tok / "probe.json", "gmm": results / "analysis" / tok / "gmm.json"}
    out |= {f"gfid@{s}": gen / f"step{s}_nocfg.json" for s in STEPS}
    return out


def row(results: Path, tok: str) -> dict[str, float]:
    files = paths(results, tok)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        sys.exit(f"missing: {' '.join(missing)}\nbuild them: snakemake --profile profiles/laptop {' '.join(missing)}")
    j = {k: json.loads(p.read_text()) for k, p in files.items()}
    nll = {r["k"]: r["nll_heldout"] for r in j["gmm"]["results"]}
    out = {"rFID": j["recon"]["rfid"], "PSNR": j["recon"]["psnr"]}
    out |= {f"gFID@{s}": j[f"gfid@{s}"]["gfid"] for s in STEPS}
    out |= {"gFID": j["gfid"]["gfid"], "gFID-rFID": j["gfid"]["gfid"] - j["recon"]["rfid"],
            "probe acc": j["probe"]["val_acc"], f"GMM NLL K={GMM_K}": nll.get(GMM_K, float("nan"))}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results/tiny"))
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    args = p.parse_args()
    rows = [(label, tok, row(args.results, tok)) for label, tok in ROWS]
    cols = list(rows[0][2])
    lines = ["| row | variant | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    lines += [f"| {label} | `{tok}` | " + " | ".join(f"{v:.3f}" for v in m.values()) + " |" for label, tok, m in rows]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
