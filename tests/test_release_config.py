"""The `weights` key of tokenizer / generator variants (released files imported instead of training), the
released variants params.yaml ships, and the tables built from them (docs/official_weights.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from maetok import config as C
from maetok.report import tables
from maetok.report.paper import read_paper_table

RELEASED = {"tokenizer": {"maetok_release": "maetok-b-128", "maetok_512_release": "maetok-b-128-512"},
            "generator": {"sit_xl_release": "sit-xl_maetok-b-128", "sit_xl_512_release": "sit-xl_maetok-b-128-512"}}


@pytest.fixture(scope="module")
def raw() -> dict:
    return C.read_yaml(C.DEFAULT_PARAMS)


def test_shipped_release_variants(raw):
    params = C.load_params(raw)
    for kind, variants in RELEASED.items():
        for name, repo in variants.items():
            w = params.released(kind, name)
            assert w.path == f"resources/weights/official/{repo}/model.safetensors" and w.repo == f"MAETok/{repo}"
    assert params.released("tokenizer", "maetok_release").config.endswith("maetok-b-128/config.json")
    assert params.released("generator", "sit_xl_release").tokenizer == "maetok_release"
    assert params.released("generator", "sit_xl_512_release").tokenizer == "maetok_512_release"
    assert params.resolution("maetok_512_release") == "hires"
    # sampled with the paper's CFG settings of each resolution (App. C.2), as the trained SiT-XLs
    assert params.sampling("sit_xl_release", "paper") == params.sampling("sit_xl", "paper")
    assert params.sampling("sit_xl_512_release", "paper") == params.sampling("sit_xl_512", "paper")
    assert all(params.released("tokenizer", v) is None for v in ("maetok", "maetok_main", "maetok_512"))


def test_a_release_is_never_the_same_run_as_a_trained_variant(raw):
    """maetok_release carries maetok_main's settings: without `weights` in the comparison the workflow
    would serve the trained maetok_main for the released tokenizer."""
    params = C.load_params(raw)
    assert params.tokenizer("maetok_release", "paper") == params.tokenizer("maetok_main", "paper")
    assert params.tokenizer_data("maetok_release", "paper") == params.tokenizer_data("maetok_main", "paper")
    for kind, variants in RELEASED.items():
        same = params.same_runs(kind, "paper")
        assert all(same[v] == v for v in variants)


def _with(raw, edit):
    data = copy.deepcopy(raw)
    edit(data)
    return data


def _tok_weights(data):
    return data["tokenizer_variants"]["maetok_release"]["weights"]


def _gen_weights(data):
    return data["generator_variants"]["sit_xl_release"]["weights"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: _tok_weights(d).update(sha256="abc"),
     "tokenizer_variants.maetok_release.weights.sha256: 'abc' is not a sha256 (64 hex digits)"),
    (lambda d: _tok_weights(d).update(latent_mean=0.1, latent_std=0.9),
     "tokenizer_variants.maetok_release.weights.latent_mean: only a generator's weights"),
    (lambda d: _tok_weights(d).update(checksum="x"),
     "unknown key 'tokenizer_variants.maetok_release.weights.checksum'"),
    (lambda d: _tok_weights(d).pop("path"), "missing key 'tokenizer_variants.maetok_release.weights.path'"),
    (lambda d: _gen_weights(d).pop("tokenizer"), "generator_variants.sit_xl_release.weights.tokenizer: missing"),
    (lambda d: _gen_weights(d).update(tokenizer="maetok_relase"),
     "generator_variants.sit_xl_release.weights.tokenizer: 'maetok_relase' is not a tokenizer variant"),
    (lambda d: _gen_weights(d).update(latent_mean=0.1), "give both or neither"),
    (lambda d: _gen_weights(d).update(latent_mean=0.1, latent_std=0.0), "latent_std: must be > 0"),
    (lambda d: _gen_weights(d).update(config="c.json"), "generator_variants.sit_xl_release.weights.config"),
    (lambda d: d["tokenizer_variants"]["maetok_release"].update(weights="model.safetensors"),
     "tokenizer_variants.maetok_release.weights: expected a mapping"),
    (lambda d: d["tokenizer_variants"]["maetok_main"]["by_scale"]["paper"].update(weights={"path": "m.safetensors"}),
     "tokenizer_variants.maetok_main.by_scale.paper.weights: `weights` is set per variant"),
])
def test_bad_weights_key_names_the_key(raw, edit, message):
    with pytest.raises(C.ConfigError) as e:
        C.load_params(_with(raw, edit))
    assert message in str(e.value)


def test_schema_describes_the_weights_key():
    schema = C.json_schema()
    for block in ("tokenizer_variants", "generator_variants"):
        weights = schema["properties"][block]["additionalProperties"]["properties"]["weights"]
        assert weights["required"] == ["path"] and not weights["additionalProperties"]
        assert set(weights["properties"]) == {"path", "sha256", "repo", "config", "tokenizer", "latent_mean",
                                              "latent_std"}
    assert json.loads(C.SCHEMA_PATH.read_text()) == schema, "run `maetok schema`"


# --------------------------------------------------------------------------------------------
# Tables 2 and 3 from the released weights
# --------------------------------------------------------------------------------------------
def test_release_tables_are_outside_rule_all():
    assert tables.RELEASE_TABLES == ("table2_release", "table3_release")
    assert not set(tables.RELEASE_TABLES) & set(tables.TABLES)
    assert tables.inputs_for("table2_release", "paper") == [
        "results/paper/tokenizer/maetok_release/recon.json",
        "results/paper/generator/maetok_release/sit_xl_release/nocfg.json",
        "results/paper/generator/maetok_release/sit_xl_release/cfg.json"]
    assert all("maetok_512_release/" in p for p in tables.inputs_for("table3_release", "paper"))


def test_release_table_at_tiny_scale_says_to_use_paper_scale():
    with pytest.raises(tables.ReportError, match=r"paper scale only: `snakemake --config scale=paper"):
        tables.inputs_for("table2_release", "tiny")


@pytest.mark.parametrize("table, ours, theirs", [("table2_release", "21", {"20"}),
                                                 ("table3_release", "17", {"16", "18"})])
def test_release_table_from_metrics(tmp_path, table, ours, theirs):
    params = C.load_params(C.DEFAULT_PARAMS, {"scale": "paper"})
    for i, path in enumerate(tables.inputs_for(table, "paper", tmp_path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        metrics = {"rfid": 0.5 + i} if path.endswith("recon.json") else {"gfid": 2.0 + i, "is": 200.0 + i}
        Path(path).write_text(json.dumps(metrics))
    rows = tables.make_table(table, tmp_path, "paper", tmp_path / "t.csv", tmp_path / "t.md", params)
    spec = tables.get_spec(table)
    assert len(rows) == len(read_paper_table(spec.parts[0].paper_csv))
    mine = [r for r in rows if r["source"] == "ours"]
    assert [(r["paper_row"], r["rfid"], r["gfid_nocfg"], r["gfid_cfg"]) for r in mine] == [(ours, "0.5", "3.0", "4.0")]
    assert {r["paper_row"] for r in rows if r["source"] == "paper"} == theirs  # the authors' rows without weights
    assert "Teacher inputs" not in (tmp_path / "t.md").read_text()  # the authors trained these tokenizers
