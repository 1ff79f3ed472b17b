"""A rehearsal of the paper path in CI: one whole Table 1 chain at `scale: paper` (tokenizer `maetok`:
stage 1 with the GAN, stage 2, rFID, latents; generator `sit_l`: training, CFG samples, gFID) run by
Snakemake with only the counts cut (rehearsal.yaml), its training jobs under torchrun with two CPU
processes (gloo), on inputs in the formats a user provides: an ImageNet-layout tree, a COCO-like
folder and RANDOMLY INITIALISED weight files under the names params.yaml gives (paper_fixtures.py).

The numbers mean nothing; what it checks is that the path runs and trains as it should on a cluster:
every job completes, the two processes of each training job end with identical weights, the GAN trains
in both stages, the last stage-2 step masks no token, and only rank 0 writes. The rehearsal takes
~5-7 minutes on 2 cores. Below it, fast tests of the paper-path defects it found.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import BIN, REPO, copy_workflow  # tests/workflow/conftest.py
from paper_fixtures import write_paper_inputs

from maetok import config as C

HERE = Path(__file__).resolve().parent
OVERLAY = HERE / "rehearsal.yaml"
RESULTS = "results/paper"
TOK = f"{RESULTS}/tokenizer/maetok"
GEN = f"{RESULTS}/generator/maetok/sit_l"
TARGETS = (f"{TOK}/recon.json", f"{GEN}/cfg.json")
TRAINING = {"train_tokenizer": "logs/paper/train_tokenizer/maetok.log",
            "finetune_decoder": "logs/paper/finetune_decoder/maetok.log",
            "train_generator": "logs/paper/train_generator/maetok/sit_l.log"}
# Two processes per training job: the rules launch `torchrun --nproc_per_node=<gpu>` for a job that
# asks for GPUs (workflow/rules/common.smk: launcher), and maetok.train.utils.setup_distributed takes
# gloo without CUDA. One thread each (Snakemake exports OMP_NUM_THREADS = threads): two per 2 cores.
LAUNCH = ("--set-resources", *(f"{rule}:gpu=2" for rule in TRAINING),
          "--set-threads", *(f"{rule}=1" for rule in (*TRAINING, "eval_reconstruction")))


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 900):
    """`snakemake ARGS --configfile params.yaml rehearsal.yaml` in `workdir`."""
    import subprocess

    cmd = ["timeout", "-k", "10", str(timeout), str(BIN / "snakemake"), *args,
           "--configfile", "params.yaml", "rehearsal.yaml"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=timeout + 30)


def rehearsal_workdir(dest: Path) -> Path:
    work = copy_workflow(dest)
    shutil.copy2(OVERLAY, work / "rehearsal.yaml")
    return work


def failed_logs(work: Path) -> str:
    """The tails of the job logs that end in an error, for the failure message."""
    out = []
    for log in sorted((work / "logs").rglob("*.log")):
        text = log.read_text(errors="replace")
        if "Traceback" in text or "error:" in text:
            out.append(f"--- {log.relative_to(work)}\n{text[-3000:]}")
    return "\n".join(out)


@pytest.fixture(scope="session")
def paper_inputs(tmp_path_factory) -> Path:
    """The rehearsal's inputs (paper_fixtures.py; ~30 s, 3 GB of random weights), once per session and
    deleted after it (pytest keeps the temporary directories of the last sessions)."""
    root = tmp_path_factory.mktemp("paper_inputs")
    write_paper_inputs(root, C.load_params(REPO / "params.yaml"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory, paper_inputs):
    """The chain, run once per session in a copy of the workflow whose `resources/` and `datasets/`
    are the fixtures (params.yaml's relative paths and rehearsal.yaml's data roots point there)."""
    work = rehearsal_workdir(tmp_path_factory.mktemp("rehearsal") / "work")
    for name in ("resources", "datasets"):
        (work / name).symlink_to(paper_inputs / name)
    audit = work.parent / "writes.jsonl"
    env = {**os.environ,
           "MAETOK_NO_COMPILE": "1",          # see rehearsal.yaml
           "MAETOK_NO_MLFLOW": "1",
           "MAETOK_WEIGHT_CHECKSUMS": "1",    # maetok.train.utils.log_weight_checksums
           "CUDA_VISIBLE_DEVICES": "",        # the CPU path (gloo) even where a GPU is present
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "rank_audit"), os.environ.get("PYTHONPATH")])),
           "MAETOK_AUDIT_ROOT": str(work), "MAETOK_AUDIT_LOG": str(audit)}
    start = time.perf_counter()
    r = snakemake(work, *TARGETS, "--cores", "2", *LAUNCH, env=env)
    seconds = time.perf_counter() - start
    print(f"paper-path rehearsal: {seconds:.0f} s")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:] + failed_logs(work)
    yield SimpleNamespace(work=work, seconds=seconds, audit=audit, output=r.stdout + r.stderr)
    shutil.rmtree(work / RESULTS / "ckpt", ignore_errors=True)  # 1.6 GB of resumable checkpoints


def curve(work: Path, stage: str) -> list[dict]:
    return json.loads((work / TOK / f"{stage}.json").read_text())["curve"]


def checksums(work: Path, rule: str) -> dict[int, dict]:
    """{rank: {module: checksum}} from the `weight-checksums` lines of a training job's log."""
    lines = re.findall(r"weight-checksums (\{.*?\})", (work / TRAINING[rule]).read_text())
    return {d.pop("rank"): d for d in map(json.loads, lines)}


# --------------------------------------------------------------------------- the rehearsal
@pytest.mark.slow
def test_every_job_of_the_chain_completes(rehearsal):
    finished = Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", rehearsal.output))
    assert finished == Counter({r: 1 for r in ("prepare_data", *TRAINING, "eval_reconstruction", "cache_latents",
                                               "sample_generator", "eval_generation")})
    work = rehearsal.work
    manifest = json.loads((work / RESULTS / "data/manifest.json").read_text())
    assert (manifest["kind"], manifest["image_size"], manifest["splits"]["train"]["count"]) == ("filelist", 256, 6)
    recon = json.loads((work / TOK / "recon.json").read_text())
    for split, dataset in (("val", "val split"), ("ood", "COCO val")):
        assert (recon[split]["dataset"], recon[split]["n"], recon[split]["image_size"]) == (dataset, 4, 256)
        assert all(math.isfinite(recon[split][k]) for k in ("rfid", "psnr", "ssim")), recon[split]
    gen = json.loads((work / GEN / "cfg.json").read_text())
    assert (gen["num_samples"], gen["feature_network"]) == (10, "inception")
    assert all(isinstance(gen[k], float) for k in ("gfid", "is", "precision", "recall")), gen
    # the paper's architectures at full width (the depth is the overlay's)
    from maetok.models.io import read_weights

    _, meta = read_weights(work / TOK / "final.safetensors", "tokenizer", "finetune_decoder")
    model = json.loads(meta["config"])["model"]
    assert (model["size"], model["depth"], model["num_latent_tokens"]) == ("MAETok-B/16", 1, 128)
    _, meta = read_weights(work / GEN / "ema.safetensors", "generator", "train_generator")
    assert (json.loads(meta["config"])["size"], json.loads(meta["config"])["depth"]) == ("SiT-L/1", 2)


@pytest.mark.slow
@pytest.mark.parametrize("rule", list(TRAINING))
def test_both_processes_end_with_the_same_weights(rehearsal, rule):
    """Each rank hashes its trained modules at the end (the tokenizer, the discriminator heads and the
    LeCAM EMAs; the generator): DDP and the discriminator's own all-reduce must keep them identical.
    The EMA copies are not compared: each rank keeps its own, only rank 0's is ever saved."""
    sums = checksums(rehearsal.work, rule)
    assert sorted(sums) == [0, 1], f"{rule}: expected a checksum line from ranks 0 and 1, got {sorted(sums)}"
    trained = ["model", "disc", "lecam"] if rule != "train_generator" else ["model"]
    for module in trained:
        assert sums[0][module] == sums[1][module], f"{rule}: {module} differs between the ranks: {sums}"


@pytest.mark.slow
def test_gan_trains_in_both_stages(rehearsal):
    """Stage 1: the GAN starts at `loss.disc_start` (step 1 of 2); stage 2 continues it from its first step."""
    stage1, stage2 = curve(rehearsal.work, "stage1"), curve(rehearsal.work, "final")
    assert [("disc_hinge" in c) for c in stage1] == [False, True]
    assert all("disc_hinge" in c for c in stage2), [sorted(c) for c in stage2]
    for c in [stage1[-1], *stage2]:
        assert c["d_weight"] > 0 and c["adv"] != 0 and math.isfinite(c["disc_loss"]), c


@pytest.mark.slow
def test_stage2_anneals_the_mask_to_nothing(rehearsal):
    """Paper §3.3: the mask ratio falls from 60% to 0 over stage 2 (here all of its 3 steps, as the
    paper's 50K of 50K), so the last step decodes unmasked encodings."""
    masked = [c["mask_fraction"] for c in curve(rehearsal.work, "final")]
    assert len(masked) == 3 and masked[0] == pytest.approx(0.6, abs=0.01), masked  # 60% of 256 tokens
    assert masked == sorted(masked, reverse=True), masked
    assert masked[-1] == 0.0, f"the last stage-2 step masked {masked[-1]:.1%} of the tokens: {masked}"


@pytest.mark.slow
def test_only_rank_zero_writes(rehearsal):
    """The audit (rank_audit/sitecustomize.py) of the torchrun workers' writes under the workflow
    directory. Not outputs, so not counted: the probe with which every process checks, before it
    starts, that its output directories are writable (a `.write-check.*` file created and removed,
    maetok/utils/io.py: check_writable)."""
    events = [e for e in map(json.loads, rehearsal.audit.read_text().splitlines())
              if not Path(e["path"]).name.startswith(".write-check.")]
    by_rank = {rank: [e for e in events if e["rank"] == rank] for rank in {e["rank"] for e in events}}
    # the audit sees rank 0 write each training job's outputs, so it would see rank 1 do so
    assert {e["command"] for e in by_rank.get(0, [])} >= {"train-tokenizer", "finetune-decoder", "train-generator"}
    assert any(e["path"] == f"{TOK}/stage1.safetensors" for e in by_rank[0])
    others = [e for rank, es in by_rank.items() if rank != 0 for e in es]
    assert not others, f"ranks other than 0 wrote: {others[:10]}"


# --------------------------------------------------------------------------- defects it found
def maetok_commands(printout: str) -> list[list[str]]:
    """The arguments of every `maetok` call (`maetok ...` or `torchrun ... -m maetok ...`) among the
    `Shell command:` lines of a `snakemake -n -p` printout."""
    out = []
    for line in printout.splitlines():
        if line.startswith("Shell command: "):
            words = shlex.split(line.removeprefix("Shell command: ").split(" > ")[0])
            at = [i for i, w in enumerate(words) if w == "maetok" and (i == 0 or words[i - 1] in ("-m", "&&")
                                                                        or "=" in words[i - 1])]
            out += [words[at[0] + 1:]] if at else []
    return out


@pytest.mark.slow
def test_every_paper_command_line_parses(tmp_path):
    """Every job of `rule all` at paper scale, dry-run: its `maetok` arguments parse. eval_generation
    passed `--evaluator` with no value where Inception needs no evaluator file, failing every gFID job."""
    from maetok.cli import build_parser

    work = rehearsal_workdir(tmp_path / "work")
    r = snakemake(work, "-n", "-p", "--forceall", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    commands = maetok_commands(r.stdout)
    seen = Counter(c[0] for c in commands)
    assert {"train-tokenizer", "finetune-decoder", "eval-reconstruction", "cache-latents", "train-generator",
            "sample-generator", "eval-generation", "make-table"} <= set(seen), seen
    parser = build_parser()
    for args in commands:
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"the paper-scale command line does not parse: maetok {shlex.join(args)}")


def test_paper_discriminator_has_a_head_per_feature_map(tmp_path):
    """The DINO discriminator backbone returns the patch embedding and 4 tapped blocks: 5 maps, each
    needing a head; with 4 heads the first GAN step at paper scale failed (zip of 4 heads and 5 maps)."""
    from paper_fixtures import _save_timm

    from maetok.train.tokenizer import build_loss

    cfg = C.load_params(REPO / "params.yaml").tokenizer("maetok", "paper")
    weights = tmp_path / "dinov2_vits14.safetensors"
    _save_timm(cfg.networks.disc_model, weights)  # random init, the hub file's layout
    cfg = dataclasses.replace(cfg, networks=dataclasses.replace(cfg.networks, disc_weights=str(weights)),
                              loss=dataclasses.replace(cfg.loss, perceptual_weight=0.0))
    loss = build_loss(cfg, str(tmp_path), stage=1)
    with torch.no_grad():
        logits = loss.discriminator(torch.zeros(2, 3, 256, 256))
    assert logits.shape == (2, 5 * 16 * 16)  # DINOv2-S/14 at 224 px: 16 x 16 tokens per map


def test_preview_grid_at_imagenet_class_count_stays_small(tmp_path, latent_cache, monkeypatch):
    """The training-end preview drew 8 samples for each of 1000 classes in one batch (8000 latents,
    16000 with CFG, decoded at once: out of GPU memory after a whole SiT-XL training). Now: 10 classes
    spread over the labels, sampled and decoded in batches."""
    from maetok import latents, sample
    from maetok.models.sit import SiT_models

    lat = latent_cache(tmp_path / "lat")
    stats = json.loads((lat / "stats.json").read_text())
    (lat / "stats.json").write_text(json.dumps({**stats, "num_classes": 1000}))
    L, H = stats["num_latent_tokens"], stats["latent_dim"]

    class FakeTokenizer(torch.nn.Module):
        def decode(self, z):
            return torch.tanh(z.flatten(1).repeat(1, 2)[:, :48]).reshape(-1, 3, 4, 4)  # (B, 3, 4, 4)

    monkeypatch.setattr(latents, "load_tokenizer", lambda path, device: (FakeTokenizer(), None, {}))
    grids = []
    monkeypatch.setattr(sample, "save_class_grid", lambda images, labels, *a, **k: grids.append((images, labels, k)))
    model = SiT_models["SiT-T/1"](num_tokens=L, in_channels=H, num_classes=1000)
    batches = []
    forward = model.forward
    model.forward = lambda x, *a, **k: batches.append(len(x)) or forward(x, *a, **k)
    gcfg = dataclasses.replace(C.load_params(REPO / "params.yaml").generator("sit_l", "tiny"), preview_steps=2)
    sample.preview_grid(model, gcfg, latents.LatentStats.load(lat), "tok", tmp_path / "p.png", per_class=2,
                        batch_size=8)
    (images, labels, kw), = grids
    assert images.shape == (20, 4, 4, 3)
    assert kw["classes"] == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert sorted(set(labels.tolist())) == kw["classes"]
    assert max(batches) <= 2 * 8  # CFG doubles a batch of 8


def test_depth_override_keeps_width_and_heads():
    """rehearsal.yaml's `depth` keys: fewer blocks, the paper sizes' widths and heads; 0 is refused."""
    from maetok.models.io import build_generator, build_tokenizer

    params = C.load_params(REPO / "params.yaml", {**C.read_yaml(OVERLAY), "scale": "paper"})
    tok_cfg, gen_cfg = params.tokenizer("maetok"), params.generator("sit_l")
    with torch.device("meta"):
        tok = build_tokenizer(tok_cfg, 256, {"dino": 1024, "clip": 1024})
        gen = build_generator(gen_cfg, 128, 32, 2)
    assert (len(tok.encoder.blocks), len(tok.decoder.blocks), tok.encoder.blocks[0].attn.num_heads) == (1, 1, 12)
    assert tok.bottleneck.proj.in_features == 768  # MAETok-B/16's width
    assert (len(gen.blocks), gen.hidden_size, gen.num_heads) == (2, 1024, 16)
    for override in ({"tokenizer": {"model": {"depth": 0}}}, {"generator": {"depth": 0}}):
        with pytest.raises(C.ConfigError, match="depth: must be > 0"):
            C.load_params(REPO / "params.yaml", {"scales": {"paper": override}})
