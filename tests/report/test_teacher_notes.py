"""The tables' footnote on how the pretrained teachers are fed (params.yaml tokenizer.networks
teacher_input / clip_norm), which the paper leaves open: stated at paper scale, and with the official
code's choice beside ours when they differ."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from maetok import config as C
from maetok.report import tables


def _paper_params(repo, **networks) -> C.Params:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["scales"]["paper"]["tokenizer"]["networks"].update(networks)
    return C.load_params(raw, {"scale": "paper"})


def test_paper_tables_state_the_teacher_inputs(repo, tmp_path):
    params = _paper_params(repo)
    for path in tables.inputs_for("table4", "paper", tmp_path, params):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"rfid": 1.0, "psnr": 20.0, "ssim": 0.5,
                                          "ood": {"rfid": 2.0, "psnr": 18.0, "ssim": 0.4}}))
    tables.make_table("table4", tmp_path, "paper", tmp_path / "t4.csv", tmp_path / "t4.md", params)
    md = (tmp_path / "t4.md").read_text()
    note = next(line for line in md.splitlines() if "Teacher inputs" in line)
    nets = params.scales["paper"].tokenizer.networks
    assert f"`teacher_input: {nets.teacher_input}`" in note and f"`clip_norm: {nets.clip_norm}`" in note
    assert nets.dino_model in note and "docs/deviations.md" in note
    assert note.count("as in the official code") == 2  # the defaults are the official code's


def test_a_departure_from_the_official_code_says_what_the_code_does(repo):
    params = _paper_params(repo, teacher_input="native", clip_norm="siglip")
    (note,) = tables.teacher_notes(tables.get_spec("table1"), params, "paper")
    assert "`teacher_input: native`" in note and "the official code resamples the patch embedding" in note
    assert "`clip_norm: siglip`" in note and "the official code: ImageNet mean/std" in note
    assert "as in the official code" not in note


def test_no_teacher_note_for_stand_in_teachers_or_without_teacher_targets(repo):
    params = _paper_params(repo)
    assert tables.teacher_notes(tables.get_spec("table1"), params, "tiny") == []  # stand-in CNNs
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["tokenizer_variants"]["maetok_main"]["aux"] = {"targets": ["hog"]}
    raw["tokenizer_variants"]["maetok_512"]["aux"] = {"targets": ["hog"]}
    assert tables.teacher_notes(tables.get_spec("table4"), C.load_params(raw), "paper") == []
