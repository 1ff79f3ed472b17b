"""make_table: every paper row once, ours beside the paper's value, cited rows kept, clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from maetok import config as C
from maetok.report import tables
from maetok.report.paper import read_paper_table

TABLE1_TOKENIZERS = ["vae", "vae_mm", "ae", "ae_mm", "maetok", "target_pixel", "target_hog", "target_dino",
                     "target_clip", "mask_0_60", "mask_10_40", "mask_20_60", "mask_40_40", "aux_linear", "aux_1",
                     "aux_6", "aux_12"]


@pytest.fixture(scope="module")
def params() -> C.Params:
    return C.load_params(C.DEFAULT_PARAMS, {"scale": "tiny"})


def fake_results(root: Path, table: str) -> Path:
    """Metrics JSONs for every input of `table`; the value encodes the file, so rows can be checked."""
    for i, path in enumerate(tables.inputs_for(table, "tiny", root)):
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.name == "recon.json":
            obj = {"rfid": 1.0 + i, "psnr": 20.0 + i, "ssim": 0.5,
                   "ood": {"rfid": 9.0 + i, "psnr": 18.0, "ssim": 0.4, "dataset": "digits"},
                   "hires": {"rfid": 30.0 + i, "psnr": 19.0, "ssim": 0.45, "image_size": 64}}
        else:
            obj = {"gfid": 100.0 + i, "is": 5.0, "is_std": 0.1, "precision": 0.6, "recall": 0.3}
        p.write_text(json.dumps(obj))
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_inputs_for_table1_lists_exactly_the_expected_jsons():
    expected = []
    for tok in TABLE1_TOKENIZERS:
        expected += [f"results/tiny/tokenizer/{tok}/recon.json", f"results/tiny/generator/{tok}/sit_l/nocfg.json"]
    got = tables.inputs_for("table1", "tiny")
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got)) == 34


def test_inputs_for_follows_scale_and_skips_unreproduced_tables():
    assert all(p.startswith("results/paper/") for p in tables.inputs_for("table4", "paper"))
    # at tiny maetok_main is maetok (it trains longer only at paper scale): its row reads maetok's run
    assert tables.inputs_for("table4", "tiny") == ["results/tiny/tokenizer/maetok/recon.json",
                                                   "results/tiny/tokenizer/maetok_512/recon.json"]
    assert tables.inputs_for("table4", "paper")[0] == "results/paper/tokenizer/maetok_main/recon.json"
    for t in ("table3", "table11"):  # the 512x512 tables: the `resolution: hires` tokenizer
        assert sorted(tables.inputs_for(t, "tiny")) == [
            f"results/tiny/generator/maetok_512/{g}/{k}.json" for g in ("lightningdit_512", "sit_xl_512")
            for k in ("cfg", "nocfg")] + ["results/tiny/tokenizer/maetok_512/recon.json"]


def test_table12_rows_sample_the_rows_cfg_setting(params):
    """Each row samples sit_xl's EMA of step cfg_sweep.generator_step (tiny: 400 of 800, as the
    paper's 2M of 4M) at the row's CFG setting."""
    got = tables.inputs_for("table12", "tiny")
    gen = "results/tiny/generator/maetok/sit_l"  # maetok_main + sit_xl at tiny: the same runs
    assert len(got) == 12 and got[0] == f"{gen}/step400_cfg1.7_0-0.7.json"
    assert f"{gen}/step400_cfg1.8_0.125-0.8.json" in got and f"{gen}/step400_cfg1.9_0-0.75.json" in got
    final = C.dataclasses.replace(params.scales["tiny"], cfg_sweep=C.CfgSweepConfig(1000, None))
    final_params = C.dataclasses.replace(params, scales={**params.scales, "tiny": final})
    assert tables.inputs_for("table12", "tiny", params=final_params)[0] == f"{gen}/cfg1.7_0-0.7.json"
    bad = C.dataclasses.replace(params.scales["tiny"], cfg_sweep=C.CfgSweepConfig(1000, 300))
    with pytest.raises(tables.ReportError, match=r"cfg_sweep.generator_step: 300 is not one of .* \[200, 400, 800\]"):
        tables.inputs_for("table12", "tiny", params=C.dataclasses.replace(params, scales={**params.scales,
                                                                                          "tiny": bad}))


def test_table12_built_from_the_sweep(tmp_path, params):
    res = fake_results(tmp_path / "results", "table12")
    out_csv, out_md = tmp_path / "t" / "table12.csv", tmp_path / "t" / "table12.md"
    rows = tables.make_table("table12", res, "tiny", out_csv, out_md, params)
    assert [r["source"] for r in rows] == ["ours"] * 12
    assert [r["guidance"] for r in rows][:2] == ["step400_cfg1.7_0-0.7", "step400_cfg1.8_0-0.7"]
    assert [float(r["gfid"]) for r in rows] == [100.0 + i for i in range(12)]  # row i reads its own JSON
    assert rows[5]["gfid_paper"] == "4.92" and rows[5]["label"] == "scale 1.9 on [0, 0.75]"
    md = out_md.read_text()
    assert "1,000 generated samples per CFG setting instead of 10,000" in md


def test_cfg_footnote_names_each_generators_setting(params):
    notes = " ".join(tables.scale_notes(tables.get_spec("table2"), params, "tiny"))
    assert "`lightningdit` scale 1.8 on [0.0, 0.75] (paper 1.8 on [0.0, 0.75])" in notes
    assert "`sit_xl` scale 1.9 on [0.0, 0.75]" in notes


def test_table1_rows_and_columns(tmp_path, params):
    res = fake_results(tmp_path / "results", "table1")
    out_csv, out_md = tmp_path / "t" / "table1.csv", tmp_path / "t" / "table1.md"
    tables.make_table("table1", res, "tiny", out_csv, out_md, params)
    rows = read_csv(out_csv)
    assert list(rows[0])[:3] == ["part", "paper_row", "label"]
    for col in ("tokenizer", "generator", "rfid", "rfid_paper", "gfid", "gfid_paper", "source", "scale"):
        assert col in rows[0]
    cols = list(rows[0])
    assert cols.index("rfid_paper") == cols.index("rfid") + 1 and cols.index("gfid_paper") == cols.index("gfid") + 1
    assert [r["part"] for r in rows] == ["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5
    assert {r["source"] for r in rows} == {"ours"} and {r["scale"] for r in rows} == {"tiny"}
    assert sorted({r["tokenizer"] for r in rows}) == sorted(TABLE1_TOKENIZERS)
    assert {r["generator"] for r in rows} == {"sit_l"}
    by = {(r["part"], r["label"]): r for r in rows}
    # 1a VAE: the paper's 1.22 / 22.17 beside our values read from vae's JSONs
    vae = by[("a", "VAE")]
    assert (vae["tokenizer"], vae["rfid_paper"], vae["gfid_paper"]) == ("vae", "1.22", "22.17")
    recon = json.loads((res / "tokenizer/vae/recon.json").read_text())
    gen = json.loads((res / "generator/vae/sit_l/nocfg.json").read_text())
    assert float(vae["rfid"]) == recon["rfid"] and float(vae["gfid"]) == gen["gfid"]
    # the same run (ae_mm) sits beside 1a AE+MM, 1b Comb. and 1d 3 with the same values
    shared = [by[("a", "AE+MM")], by[("b", "Comb.")], by[("d", "3")]]
    assert {r["tokenizer"] for r in shared} == {"ae_mm"}
    assert len({(r["rfid"], r["gfid"]) for r in shared}) == 1
    assert {r["rfid_paper"] for r in shared} == {"0.85"}
    assert by[("c", "40-60%")]["tokenizer"] == "target_hog" and by[("c", "40-60%")]["gfid_paper"] == "17.18"
    assert by[("b", "HOG")]["gfid_paper"] == "13.54"  # the paper's inconsistency, kept as printed
    md = out_md.read_text()
    assert md.startswith("# Table 1") and "Scale: **tiny**" in md
    for heading in ("(a) Mask modeling", "(b) Reconstruction target", "(c) Mask ratio", "(d) Auxiliary decoder"):
        assert f"## {heading}" in md
    assert "rFID (ours) | rFID (paper)" in md
    for footnote in ("Fashion-MNIST", "MAETok-XS", "MAETok-B/16", "SiT-T/1", "SiT-L/1", "stand-in CNNs", "DINOv2",
                     "Inception", "5,000 generated samples instead of 50,000", "NOT comparable",
                     "perceptual loss weight 0.1, only in stage 2 or, without one, the last 200 stage-1 steps"):
        assert footnote in md, footnote
    assert "COCO" not in md  # table1 has no out-of-domain column


def test_table2_marks_cited_rows(tmp_path, params):
    res = fake_results(tmp_path / "results", "table2")
    tables.make_table("table2", res, "tiny", tmp_path / "table2.csv", tmp_path / "table2.md", params)
    rows = read_csv(tmp_path / "table2.csv")
    assert len(rows) == len(read_paper_table("table2.csv"))
    assert "part" not in rows[0]
    ours = [r for r in rows if r["source"] == "ours"]
    assert [(r["label"], r["tokenizer"], r["generator"]) for r in ours] == [
        ("MAETok + LightningDiT", "maetok_main", "lightningdit"), ("MAETok + SiT-XL", "maetok_main", "sit_xl")]
    assert ours[1]["gfid_cfg_paper"] == "1.67" and ours[1]["guidance"] == "nocfg+cfg"
    assert all(r["gfid_nocfg"] and r["is_cfg"] and r["rfid"] for r in ours)
    cited = [r for r in rows if r["source"] == "cited"]
    assert len(cited) == len(rows) - 2
    dit = next(r for r in cited if r["label"] == "DiT-XL/2")
    assert (dit["gfid_nocfg_paper"], dit["tokenizer"], dit["gfid_nocfg"], dit["citation"]) == (
        "9.62", "", "", "Peebles & Xie 2023")
    md = (tmp_path / "table2.md").read_text()
    assert "| DiT-XL/2 |" in md and "cited" in md and "LightningDiT-T/1" in md


def test_table3_512_rows_of_ours_are_the_hires_tokenizer(tmp_path, params):
    res = fake_results(tmp_path / "results", "table3")
    tables.make_table("table3", res, "tiny", tmp_path / "t3.csv", tmp_path / "t3.md", params)
    rows = read_csv(tmp_path / "t3.csv")
    ours = [r for r in rows if r["source"] == "ours"]
    assert [(r["paper_row"], r["tokenizer"], r["generator"]) for r in ours] == [
        ("16", "maetok_512", "lightningdit_512"), ("17", "maetok_512", "sit_xl_512")]
    assert [r["source"] for r in rows if r["group"] == "Ours"] == ["ours", "ours", "paper"]  # USiT-2B: paper's
    assert {r["source"] for r in rows if r["group"] != "Ours"} == {"cited"}
    md = (tmp_path / "t3.md").read_text()
    assert "64x64 (the 32x32 images upsampled) for 512x512" in md
    assert "`sit_xl_512` scale 1.5 on [0.0, 0.7] (paper 1.5 on [0.0, 0.7])" in md


@pytest.mark.parametrize("table", tables.TABLES)
def test_every_table_builds_from_fake_metrics(tmp_path, params, table):
    res = fake_results(tmp_path / "results", table)
    rows = tables.make_table(table, res, "tiny", tmp_path / f"{table}.csv", tmp_path / f"{table}.md", params)
    spec = tables.get_spec(table)
    assert len(rows) == sum(len(read_paper_table(p.paper_csv)) for p in spec.parts)
    assert sum(r["source"] == "ours" for r in rows) == len(spec.our_rows())
    for r in rows:
        for m in spec.metric_columns:
            assert bool(r[m]) == (r["source"] == "ours" and any(
                m == col and src for p in spec.parts if p.name == r["part"] for col, src in p.metrics.items()))


def test_missing_metric_names_file_and_target(tmp_path, params):
    res = fake_results(tmp_path / "results", "table1")
    missing = res / "generator/aux_6/sit_l/nocfg.json"
    missing.unlink()
    with pytest.raises(tables.MissingMetricError) as e:
        tables.make_table("table1", res, "tiny", tmp_path / "t.csv", tmp_path / "t.md", params)
    msg = str(e.value)
    assert str(missing) in msg and "eval_generation" in msg and f"snakemake --cores all {missing}" in msg
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "t.md").exists()


def test_missing_key_is_a_clear_error(tmp_path, params):
    res = fake_results(tmp_path / "results", "table4")
    path = res / "tokenizer/maetok/recon.json"
    path.write_text(json.dumps({"rfid": 1.0, "psnr": 2.0, "ssim": 0.5}))
    with pytest.raises(tables.MissingMetricError, match="no metric 'ood.rfid'"):
        tables.make_table("table4", res, "tiny", tmp_path / "t.csv", tmp_path / "t.md", params)


def test_spec_variants_exist_in_params(params):
    for spec in tables.load_specs().values():
        for _, row in spec.our_rows():
            assert row.tokenizer in params.tokenizer_variants, row
            assert row.generator is None or row.generator in params.generator_variants, row


def test_paper_scale_has_no_standin_footnotes(params):
    assert tables.scale_notes(tables.get_spec("table1"), params, "paper") == []


def test_cli_make_table(tmp_path, capsys):
    from maetok.cli import main

    res = fake_results(tmp_path / "results", "table5")
    out = tmp_path / "t5.csv"
    rc = main(["make-table", "table5", "--scale", "tiny", "--results", str(res), "--out-csv", str(out),
               "--out-md", str(tmp_path / "t5.md")])
    assert rc == 0 and len(read_csv(out)) == 6
    rc = main(["make-table", "table5", "--scale", "tiny", "--results", str(tmp_path / "empty"),
               "--out-csv", str(out), "--out-md", str(tmp_path / "t5.md")])
    assert rc == 2 and "is missing" in capsys.readouterr().err


def test_rows_that_are_another_tables_run_say_so(params):
    # At tiny, maetok_main is maetok (it only trains longer at paper scale) and sit_xl is sit_l:
    # Table 2's MAETok + SiT-XL row is Table 1a's AE+MM+FT run.
    notes = tables.shared_run_notes(tables.get_spec("table2"), params, "tiny")
    assert any("tokenizer `maetok_main` has the same config as `maetok`" in n for n in notes)
    assert any("generator `sit_xl` has the same config and sampling as `sit_l`" in n for n in notes)
    assert notes[-1] == ("These rows repeat numbers of the same runs in Table 1a (`maetok` + `sit_l`), "
                         "Table 13a (`maetok` + `sit_l`).")
    # Table 4 reads only reconstruction metrics: it shares the tokenizer, not the generator.
    assert tables.shared_run_notes(tables.get_spec("table4"), params, "tiny")[-1] == (
        "These rows repeat numbers of the same runs in Table 1a (`maetok`), Table 13a (`maetok`).")
    assert tables.shared_run_notes(tables.get_spec("table1"), params, "tiny") == []
    assert tables.shared_run_notes(tables.get_spec("table2"), params, "paper") == []


def test_shared_run_notes_follow_the_params():
    # Give sit_xl a tiny config of its own: Table 2 then shares only the tokenizer with Table 1a.
    raw = yaml.safe_load(Path(C.DEFAULT_PARAMS).read_text())
    raw["generator_variants"]["sit_xl"]["by_scale"]["tiny"] = {"optim": {"steps": 900}}
    notes = tables.shared_run_notes(tables.get_spec("table2"), C.load_params(raw, {"scale": "tiny"}), "tiny")
    assert not any("generator `sit_xl`" in n for n in notes)
    assert notes[-1] == "These rows repeat numbers of the same runs in Table 1a (`maetok`), Table 13a (`maetok`)."
