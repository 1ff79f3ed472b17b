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


def test_model_info_and_the_built_aux_heads_agree_on_the_paper_teachers():
    """model-info sizes the DINO/CLIP heads from the configured teachers (SigLIP-L/16 at paper scale,
    not the official code's SigLIP-SO400M), as the tokenizer trainer builds them."""
    import timm
    import torch

    from maetok import config as C
    from maetok.models.io import build_tokenizer
    from maetok.models.teachers import teacher_dims
    from maetok.models.tokenizer import model_info as count

    params = C.load_params()
    cfg = params.tokenizer("maetok", "paper")
    info = tokenizer_info(cfg.model.size, cfg.networks)
    with torch.device("meta"):
        dims = teacher_dims(cfg.networks, cfg.aux.targets)  # what the trainer's load_teachers returns
        built = build_tokenizer(cfg, params.scales["paper"].data.image_size, dims)
        for target in ("dino", "clip"):
            name = getattr(cfg.networks, f"{target}_model")
            width = timm.create_model(name, pretrained=False, num_classes=0).num_features
            assert info["teachers"][target] == {"model": name, "width": width}
            assert built.aux_decoders[target].head.out_features == width
    assert info["built"]["aux_decoders"] == count(built)["aux_decoders"]


def test_model_info_cli_reports_the_configured_teachers(capsys):
    """By default the paper-scale networks of params.yaml; `--scale tiny` the stand-in teachers."""
    from maetok import config as C

    assert main(["model-info", "MAETok-B/16"]) == 0
    teachers = json.loads(capsys.readouterr().out)["teachers"]
    assert teachers["clip"]["model"] == C.load_params().scales["paper"].tokenizer.networks.clip_model
    assert main(["model-info", "MAETok-B/16", "--scale", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["teachers"]["clip"]["model"] == "stand-in teacher-clip"
