"""`maetok model-info`: the numbers the issues and the paper quote."""

from __future__ import annotations

import json

import pytest

from maetok.cli import main
from maetok.models.info import generator_info, model_info, tokenizer_info


def test_maetok_b16_reports_the_papers_parameter_counts():
    info = tokenizer_info("MAETok-B/16")
    assert abs(info["official_equivalent"]["tokenizer"] / 173.9e6 - 1) < 0.003  # paper: 176M incl. 2.13M projector
    assert abs(info["official_equivalent"]["aux_decoders"] / 6.0e6 - 1) < 0.01
    assert info["latent_shape"] == [128, 32]


def test_sit_xl_flops_ratio_128_vs_1024_tokens():
    short, long = generator_info("SiT-XL/1", 128), generator_info("SiT-XL/1", 1024)
    assert short["forward_gflops"] == pytest.approx(116.7, rel=0.01)
    assert long["forward_gflops"] / short["forward_gflops"] == pytest.approx(1049 / 116.7, rel=0.02)
    assert short["total"] == 675_000_608 and short["trainable"] == 674_853_152


def test_model_info_cli_prints_json(capsys):
    assert main(["model-info", "SiT-L/1"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 457_988_128
    with pytest.raises(ValueError, match="unknown model"):
        model_info("ViT-Huge")
