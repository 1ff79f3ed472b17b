"""How the pretrained teachers see the images (params.yaml tokenizer.networks.teacher_input,
clip_norm), with a small random-init timm ViT saved as a local weight file (nothing is downloaded)."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import resample_patch_embed

from maetok import config as C
from maetok.models import teachers

NAME = "vit_small_patch14_dinov2"  # a /14 teacher like DINOv2-L, small enough to build on a CPU
IMAGE, PATCH = 64, 16  # the tokenizer's image and patch size: a 4 x 4 grid


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-init ViT-S/14 saved as the teachers' weight file; returns (path, its patch kernel)."""
    torch.manual_seed(0)
    model = timm.create_model(NAME, pretrained=False, num_classes=0, img_size=56)
    path = tmp_path_factory.mktemp("weights") / "vits14.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model.patch_embed.proj.weight.detach().clone()


def _networks(path, **kw) -> C.NetworksConfig:
    paper = C.load_params().scales["paper"].tokenizer.networks
    return dataclasses.replace(paper, dino_model=NAME, dino_weights=str(path), clip_model=NAME,
                               clip_weights=str(path), **kw)


def _inputs(fn, x):
    """(what the teacher's patch embedding receives, the features) for images x."""
    seen = []
    hook = fn.module.patch_embed.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        feats = fn(x)
    finally:
        hook.remove()
    return seen[0], feats


def test_official_input_resamples_the_patch_embedding_and_keeps_the_image_size(weights):
    """The official code's DINOv2: the 14 px kernel resampled to the tokenizer's 16 px (timm's
    FlexiViT resampling), run at the tokenizer's image size, on ImageNet-normalised inputs (whatever
    clip_norm says)."""
    path, kernel = weights
    nets = _networks(path, teacher_input="official", clip_norm="siglip")
    fns, dims = teachers.load_teachers(nets, ["hog", "dino"], "", IMAGE, PATCH)
    model = fns["dino"].module
    assert model.patch_embed.proj.weight.shape[-2:] == (PATCH, PATCH)
    torch.testing.assert_close(model.patch_embed.proj.weight, resample_patch_embed(kernel, [PATCH, PATCH]))
    x = torch.rand(2, 3, IMAGE, IMAGE) * 2 - 1
    seen, feats = _inputs(fns["dino"], x)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    torch.testing.assert_close(seen, ((x + 1) / 2 - mean) / std)
    assert feats.shape == (2, (IMAGE // PATCH) ** 2, model.num_features)
    assert dims == teachers.teacher_dims(nets, ["hog", "dino"]) == {"dino": model.num_features}


def test_native_input_keeps_the_patch_and_shrinks_the_image(weights):
    path, kernel = weights
    fns, _ = teachers.load_teachers(_networks(path, teacher_input="native"), ["dino"], "", IMAGE, PATCH)
    model = fns["dino"].module
    torch.testing.assert_close(model.patch_embed.proj.weight, kernel)
    seen, feats = _inputs(fns["dino"], torch.rand(2, 3, IMAGE, IMAGE) * 2 - 1)
    assert seen.shape[-2:] == (IMAGE // PATCH * 14, IMAGE // PATCH * 14)
    assert feats.shape[1] == (IMAGE // PATCH) ** 2  # the same token grid as the tokenizer's


@pytest.mark.parametrize("clip_norm", ["imagenet", "siglip"])
def test_clip_norm_chooses_the_clip_teachers_normalisation(weights, clip_norm):
    """ImageNet mean/std (the official code) or SigLIP's 0.5/0.5, which maps [-1, 1] images to themselves
    (the DINO-type teacher gets ImageNet's either way: see the test above)."""
    path, _ = weights
    fns, _ = teachers.load_teachers(_networks(path, clip_norm=clip_norm), ["clip"], "", IMAGE, PATCH)
    x = torch.rand(2, 3, IMAGE, IMAGE) * 2 - 1
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    torch.testing.assert_close(_inputs(fns["clip"], x)[0], ((x + 1) / 2 - mean) / std if clip_norm == "imagenet" else x)


def test_paper_config_defaults_to_the_official_teacher_inputs():
    nets = C.load_params().scales["paper"].tokenizer.networks
    assert (nets.teacher_input, nets.clip_norm) == ("official", "imagenet")
    dino_patch = teachers.timm_geometry(nets.dino_model)[1]
    assert dino_patch == 14  # DINOv2-L/14: the case where official (16 px at 256) and native (14 px at 224) differ
    assert teachers.teacher_geometry(nets.dino_model, 256, 16, "official") == (256, 16)
    assert teachers.teacher_geometry(nets.dino_model, 256, 16, "native") == (224, 14)
