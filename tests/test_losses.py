import copy

import numpy as np
import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from maetok.losses import (
    AllReduceBatchNorm1d,
    DinoViTFeatures,
    DiscHead,
    Discriminator,
    LeCAM,
    PerceptualLoss,
    TokenizerLoss,
    VGG16Features,
    _unit,
    adaptive_weight,
    diff_augment,
    dino_vits16,
    hinge_d_loss,
    hinge_g_loss,
    lecam_reg,
    lpips_vgg,
    sync_batchnorm,
)
from maetok.models.standins import SmallCNN, seeded


@pytest.fixture(scope="module")
def backbone():
    return seeded(SmallCNN, 0)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g) * 2 - 1


class CountingBackbone(nn.Module):
    """Wraps a backbone and counts forward_features calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward_features(self, x):
        self.calls += 1
        return self.inner.forward_features(x)


# ---------------------------------------------------------------- GAN terms
def test_hinge_losses_on_hand_set_logits():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> 5/6 ; relu(1 + fake) = [0, 1, 2] -> 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    assert hinge_g_loss(fake).item() == pytest.approx(1 / 3)
    assert hinge_d_loss(torch.full((3,), 1.0), torch.full((3,), -1.0)).item() == 0.0


def test_lecam_zero_at_ema_and_positive_otherwise():
    c = torch.full((8,), 0.3)
    assert lecam_reg(c, c, ema_real=torch.tensor(0.3), ema_fake=torch.tensor(0.3)).item() == 0.0
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 1.0])
    # relu(real - 2)^2 = [0, 1] -> .5 ; relu(0 - fake)^2 = [1, 0] -> .5
    assert lecam_reg(real, fake, ema_real=torch.tensor(0.0), ema_fake=torch.tensor(2.0)).item() == pytest.approx(1.0)


def test_lecam_ema_is_updated_before_the_term():
    lecam = LeCAM(decay=0.9)
    real, fake = torch.full((4,), 2.0), torch.full((4,), -1.0)
    r = lecam(real, fake)
    assert lecam.ema_real.item() == pytest.approx(0.2)
    assert lecam.ema_fake.item() == pytest.approx(-0.1)
    # with the updated EMAs: relu(2 - (-0.1))^2 + relu(0.2 - (-1))^2
    assert r.item() == pytest.approx(2.1**2 + 1.2**2, rel=1e-5)


# ---------------------------------------------------------------- DiffAugment
def test_diff_augment_is_differentiable_and_seeded(images):
    x = images.clone().requires_grad_(True)
    out = diff_augment(x, prob=1.0, generator=torch.Generator().manual_seed(3))
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    a = diff_augment(images, prob=1.0, generator=torch.Generator().manual_seed(3))
    b = diff_augment(images, prob=1.0, generator=torch.Generator().manual_seed(3))
    c = diff_augment(images, prob=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(diff_augment(images, prob=0.0), images)


def test_diff_augment_coin_is_shared_by_the_batch(images):
    outcomes = set()
    for seed in range(20):
        out = diff_augment(images, "color", prob=0.5, generator=torch.Generator().manual_seed(seed))
        changed = (out != images).flatten(1).any(1)
        assert changed.all() or not changed.any()
        outcomes.add(bool(changed.all()))
    assert outcomes == {True, False}


def test_translation_is_an_integer_shift_with_zero_fill(images):
    out = diff_augment(images, "translation", prob=1.0, generator=torch.Generator().manual_seed(0))
    s = int(32 * 0.125 + 0.5)
    for x, y in zip(images, out, strict=True):
        matches = []
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                ref = torch.zeros_like(x)
                # y[i, j] = x[i + dy, j + dx] where inside, else 0
                ys, xs = slice(max(0, -dy), min(32, 32 - dy)), slice(max(0, -dx), min(32, 32 - dx))
                ref[:, ys, xs] = x[:, max(0, dy) : min(32, 32 + dy), max(0, dx) : min(32, 32 + dx)]
                matches.append(torch.equal(ref, y))
        assert any(matches)


def test_cutout_zeroes_one_square_per_sample():
    x = torch.ones(16, 3, 32, 32)
    out = diff_augment(x, "cutout_0.25", prob=1.0, generator=torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert (zeros > 0).all() and (zeros <= 8 * 8).all() and (zeros == 64).any()
    assert torch.equal(out[:, 0], out[:, 2])


# ---------------------------------------------------------------- adaptive weight
def test_adaptive_weight_equals_hand_computed_ratio():
    g = torch.Generator().manual_seed(0)
    h, y, v = torch.randn(5, 4, generator=g), torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    w = torch.randn(3, 4, generator=g, requires_grad=True)
    out = h @ w.T
    rec, g_loss = ((out - y) ** 2).mean(), -(out * v).mean()
    d = adaptive_weight(rec, g_loss, w)
    hn, yn, vn, wn = (t.detach().double().numpy() for t in (h, y, v, w))
    grad_rec = 2 / 15 * (hn @ wn.T - yn).T @ hn
    grad_g = -1 / 15 * vn.T @ hn
    assert d.item() == pytest.approx(np.linalg.norm(grad_rec) / (np.linalg.norm(grad_g) + 1e-4), rel=1e-5)
    assert not d.requires_grad
    assert adaptive_weight(rec * 1e6, g_loss, w).item() == pytest.approx(1e4)


# ---------------------------------------------------------------- perceptual
def test_unit_normalisation_equals_f_normalize():
    f = torch.randn(3, 8, 5, 5)
    f[0, :, 0, 0] = 0  # an all-zero feature vector stays zero (F.normalize's eps)
    torch.testing.assert_close(_unit(f), torch.nn.functional.normalize(f, dim=1, eps=1e-10))


def test_standin_perceptual_is_zero_for_identical_and_frozen(backbone, images):
    loss = PerceptualLoss(backbone)
    x = images.clone().requires_grad_(True)
    assert loss(images, images).item() == pytest.approx(0.0, abs=1e-6)
    d = loss(x, images.flip(0))
    assert 0 < d.item() <= 1
    d.backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    assert not loss.train().backbone.training


def test_lpips_vgg_loads_local_files(tmp_path, images):
    vgg = seeded(VGG16Features, 0)
    torch.save({f"features.{k}": v for k, v in vgg.features.state_dict().items()}, tmp_path / "vgg16.pth")
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(VGG16Features.channels)}
    torch.save(lin, tmp_path / "vgg.pth")
    loss = lpips_vgg(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    assert torch.equal(loss.backbone.features[0].weight, vgg.features[0].weight)
    assert loss(images, images).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(images, images.flip(0)).item() > 0
    torch.save({k: torch.zeros_like(v) for k, v in lin.items()}, tmp_path / "zero.pth")
    assert lpips_vgg(tmp_path / "vgg16.pth", tmp_path / "zero.pth")(images, images.flip(0)).item() == 0.0


def test_missing_weight_files_raise_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere/vgg16\.pth.*vgg16-397923af\.pth"):
        lpips_vgg(tmp_path / "nowhere/vgg16.pth", tmp_path / "nowhere/vgg.pth")
    (tmp_path / "vgg16.pth").touch()
    with pytest.raises(FileNotFoundError, match=r"nowhere/vgg\.pth.*lpips/weights/v0\.1/vgg\.pth"):
        lpips_vgg(tmp_path / "vgg16.pth", tmp_path / "nowhere/vgg.pth")
    with pytest.raises(FileNotFoundError, match=r"dino\.pth.*dino_deitsmall16_pretrain\.pth"):
        dino_vits16(tmp_path / "dino.pth")


# ---------------------------------------------------------------- discriminator
def test_official_head_size_matches_the_released_discriminator():
    heads = nn.ModuleList(DiscHead(384) for _ in range(5))
    assert sum(p.numel() for p in heads.parameters()) == 7_386_245  # the official DinoDisc heads' count


def test_discriminator_trains_heads_only(backbone, images):
    disc = Discriminator(backbone, backbone.stage_channels).train()
    assert disc.training and not disc.backbone.training
    x = images.clone().requires_grad_(True)
    logits = disc(x)
    assert logits.shape == (4, 32 * 32 + 16 * 16 + 8 * 8)
    logits.mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in disc.heads.parameters())


def test_dino_features_tap_five_token_maps():
    vit = seeded(lambda: timm.create_model("vit_small_patch16_224", embed_dim=48, num_heads=3, num_classes=0), 0)
    feats = DinoViTFeatures(vit).forward_features(torch.rand(2, 3, 256, 256) * 2 - 1)
    assert [f.shape for f in feats] == [(2, 48, 196)] * 5
    assert Discriminator(DinoViTFeatures(vit), [48] * 5)(torch.zeros(2, 3, 224, 224)).shape == (2, 5 * 196)


# ---------------------------------------------------------------- TokenizerLoss
def make_loss(backbone, **kw):
    counting = CountingBackbone(backbone)
    return TokenizerLoss(PerceptualLoss(backbone), Discriminator(counting, backbone.stage_channels), **kw), counting


def decode(seed=0):
    torch.manual_seed(seed)
    decoder = nn.Linear(8, 3 * 32 * 32)
    return decoder, decoder(torch.randn(4, 8)).view(4, 3, 32, 32)


def test_adversarial_term_is_zero_before_disc_start(backbone, images):
    loss_fn, counting = make_loss(backbone, disc_start=100)
    decoder, x_rec = decode()
    out = loss_fn.generator_loss(images, x_rec, step=99, last_layer=decoder.weight)
    assert out["adv"].item() == 0.0 and out["g_adv"].item() == 0.0
    assert out["loss"].item() == (out["rec"] + out["perceptual"]).item()
    d = loss_fn.discriminator_loss(images, x_rec, step=99)
    assert d["loss"].item() == 0.0 and not d["loss"].requires_grad
    assert counting.calls == 0 and loss_fn.lecam.ema_real.item() == 0.0
    out = loss_fn.generator_loss(images, x_rec, step=100, last_layer=decoder.weight)
    assert out["adv"].item() != 0.0 and counting.calls == 1


def test_generator_loss_combines_the_terms(backbone, images):
    loss_fn, _ = make_loss(backbone, disc_start=0, kl_weight=0.01, perceptual_warmup=10)
    decoder, x_rec = decode()
    aux = {"hog": torch.tensor(0.5), "dino": (torch.tensor(0.25), 2.0)}
    out = loss_fn.generator_loss(images, x_rec, step=5, last_layer=decoder.weight, aux_losses=aux,
                                 kl=torch.tensor(3.0))
    assert out["perceptual_factor"].item() == pytest.approx(0.5)
    assert out["adv"].item() == pytest.approx(0.4 * out["d_weight"].item() * out["g_adv"].item(), rel=1e-5)
    expected = out["rec"] + 0.5 * out["perceptual"] + out["adv"] + 0.01 * 3.0 + 0.5 + 2.0 * 0.25
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()
    assert decoder.weight.grad.abs().sum() > 0


def test_generator_loss_without_perceptual_or_gan(images):
    decoder, x_rec = decode()
    out = TokenizerLoss(disc_start=0).generator_loss(images, x_rec, step=10**6)
    assert out["loss"].item() == pytest.approx(((x_rec - images) ** 2).mean().item())
    assert TokenizerLoss().discriminator_loss(images, x_rec, step=10**6)["loss"].item() == 0.0


def test_discriminator_loss_terms(backbone, images):
    loss_fn, _ = make_loss(backbone, disc_start=0, cr_weight=4.0)
    decoder, x_rec = decode()
    out = loss_fn.discriminator_loss(images, x_rec, step=0)
    assert out["loss"].requires_grad and out["cr"].item() > 0
    expected = 0.4 * (out["hinge"] + 1e-3 * out["lecam"]) + 4.0 * out["cr"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss_fn.lecam.ema_real.item() == pytest.approx(1e-3 * out["logits_real"].item(), rel=1e-4)
    out["loss"].backward()
    assert decoder.weight.grad is None  # the D loss sees a detached reconstruction


def _sync_bn_worker(rank, world, init_file):
    """One process of test_all_reduce_batchnorm_equals_batchnorm_over_the_global_batch."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)   # the same global batch, head and loss weights on every rank
        x, w = torch.randn(4 * world, 6, 5, generator=g) * 3 + 2, torch.randn(4 * world, 6, 5, generator=g)
        ref = nn.Sequential(nn.Conv1d(6, 6, 1), nn.BatchNorm1d(6))
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        synced = sync_batchnorm(copy.deepcopy(ref), "cpu")
        assert isinstance(synced[1], AllReduceBatchNorm1d)
        rows = slice(4 * rank, 4 * (rank + 1))
        x_local = x[rows].clone().requires_grad_()
        (synced(x_local) * w[rows]).sum().backward()
        x_global = x.clone().requires_grad_()
        y_global = ref(x_global)
        (y_global * w).sum().backward()
        # outputs and input gradients of this rank's rows: those of one batch norm over the global batch
        torch.testing.assert_close(synced(x_local).detach(), y_global[rows].detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x_local.grad, x_global.grad[rows], rtol=1e-4, atol=1e-5)
        # parameter gradients summed over the ranks, running statistics on every rank: the global ones
        for p_sync, p_ref in zip(synced.parameters(), ref.parameters(), strict=True):
            dist.all_reduce(p_sync.grad)
            torch.testing.assert_close(p_sync.grad, p_ref.grad, rtol=1e-4, atol=1e-4)
        ref(x)   # the second forward above updated the synced running stats twice
        torch.testing.assert_close(synced[1].running_mean, ref[1].running_mean)
        torch.testing.assert_close(synced[1].running_var, ref[1].running_var)
        assert int(synced[1].num_batches_tracked) == 2
    finally:
        dist.destroy_process_group()


def test_all_reduce_batchnorm_equals_batchnorm_over_the_global_batch(tmp_path):
    """The CPU stand-in for SyncBatchNorm (2 gloo processes): forward, backward and running statistics
    as one BatchNorm1d over the concatenated batches. Plain BatchNorm1d (per-process statistics) fails."""
    mp.spawn(_sync_bn_worker, args=(2, str(tmp_path / "store")), nprocs=2)


def test_sync_batchnorm_keeps_the_parameters_and_runs_plain_in_one_process(backbone, images):
    disc = Discriminator(backbone, backbone.stage_channels)
    params, plain = {id(p) for p in disc.heads.parameters()}, copy.deepcopy(disc)
    disc.heads = sync_batchnorm(disc.heads, "cpu")
    assert {id(p) for p in disc.heads.parameters()} == params   # an optimiser built before keeps working
    bns = [m for m in disc.heads.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and all(isinstance(m, AllReduceBatchNorm1d) for m in bns)
    torch.testing.assert_close(disc(images), plain(images))
    torch.testing.assert_close(disc.state_dict(), plain.state_dict())   # the same running statistics
