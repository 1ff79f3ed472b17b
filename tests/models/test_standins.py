import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
from safetensors.torch import load_file

from maetok.models.standins import (
    EVALUATOR_NAME,
    Evaluator,
    EvaluatorFeatureExtractor,
    SmallCNN,
    Standin_models,
    count_params,
    load_weights,
    register_evaluator,
    save_weights,
    seeded,
    teacher_features,
    to_model_input,
)
from maetok.train.standins import train_self_supervised, train_supervised


def band_data(n, seed):
    """4 classes: a bright 6-row band at one of 4 heights in a noisy dark 32x32 uint8 image.

    The classes survive the stand-ins' flip and 2 px shift augmentation.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 60, (n, 32, 32), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, 2 + 8 * y : 8 + 8 * y, 6:26] = 200
    return images, labels


@pytest.mark.parametrize("name", sorted(Standin_models))
def test_standin_shapes(name):
    model = seeded(Standin_models[name], 0)
    feats, pooled = model(torch.zeros(2, 3, 32, 32))
    assert [f.shape for f in feats] == [(2, 32, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8)]
    assert pooled.shape == (2, 128)
    assert 250_000 < count_params(model) < 350_000


def test_to_model_input_range_and_channels():
    x = to_model_input(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.shape == (1, 3, 1, 2)
    assert x[0, :, 0, 0].tolist() == [-1.0] * 3 and x[0, :, 0, 1].tolist() == [1.0] * 3


def test_supervised_reaches_well_above_chance():
    images, labels = band_data(600, 0)
    model = seeded(lambda: SmallCNN(num_classes=4), 0)
    metrics = train_supervised(model, images, labels, steps=30, batch_size=32, lr=5e-3, seed=0, progress=False,
                               eval_data=band_data(200, 1))
    assert metrics["test_acc"] > 0.9  # chance is 0.25
    assert metrics["num_eval"] == 200 and np.isfinite(metrics["final_loss"])


def test_supervised_is_deterministic_and_holds_out():
    images, labels = band_data(200, 0)
    runs = []
    for seed in (0, 0, 1):
        model = seeded(lambda: SmallCNN(num_classes=4), 0)
        metrics = train_supervised(model, images, labels, steps=3, batch_size=16, seed=seed, progress=False)
        runs.append(model.state_dict())
    assert metrics["num_eval"] == 20  # 10% held out
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_self_supervised_reports_knn_accuracy():
    images, labels = band_data(400, 0)
    model = seeded(SmallCNN, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = train_self_supervised(model, images, steps=4, batch_size=32, seed=0, progress=False, labels=labels)
    assert metrics["method"] == "simclr" and np.isfinite(metrics["final_loss"])
    assert metrics["knn_acc"] > 0.6 and 0 <= metrics["knn_acc_init"] <= 1  # chance is 0.25
    assert not torch.equal(before["stages.0.0.weight"], model.state_dict()["stages.0.0.weight"])
    assert isinstance(model.head, torch.nn.Identity)


def test_teacher_features_resample_to_the_patch_grid():
    model = seeded(SmallCNN, 0).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    last = model.forward_features(x)[-1]  # (2, 128, 8, 8)
    same = teacher_features(model, x, grid=8)
    # teacher_features runs channels-last (another conv kernel): equal to float rounding
    assert same.shape == (2, 64, 128) and torch.allclose(same, last.flatten(2).transpose(1, 2), atol=1e-5)
    half = teacher_features(model, x, grid=4)  # bilinear /2 without align_corners = 2x2 mean
    assert torch.allclose(half, F.avg_pool2d(last, 2).flatten(2).transpose(1, 2), atol=1e-5)


def test_weights_round_trip_through_safetensors(tmp_path):
    model = seeded(Evaluator, 0)
    save_weights(model, tmp_path / "sub" / "ev.safetensors", metadata={"role": "evaluator"})
    assert set(load_file(tmp_path / "sub" / "ev.safetensors")) == set(model.state_dict())
    loaded = load_weights(seeded(Evaluator, 1), tmp_path / "sub" / "ev.safetensors")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_weights(Evaluator(), tmp_path / "missing.safetensors")


class UInt8Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = torch.as_tensor(images)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def test_fidelity_with_registered_evaluator(tmp_path):
    weights = tmp_path / "evaluator.safetensors"
    save_weights(seeded(Evaluator, 0).eval(), weights)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        register_evaluator(tmp_path / "nowhere.safetensors")
    assert register_evaluator(weights) == register_evaluator(weights) == EVALUATOR_NAME

    images = torch.as_tensor(band_data(200, 0)[0]).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    extractor = EvaluatorFeatureExtractor(EVALUATOR_NAME, ["feat"], feature_extractor_weights_path=weights)
    (feat,) = extractor(images[:4])
    assert torch.allclose(feat, load_weights(Evaluator(), weights).eval()(to_model_input(images[:4]))[1], atol=1e-5)

    resampled = torch.as_tensor(band_data(200, 1)[0]).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    noise = torch.as_tensor(np.random.default_rng(1).integers(0, 256, (200, 3, 32, 32), dtype=np.uint8))
    kw = dict(feature_extractor=EVALUATOR_NAME, feature_extractor_weights_path=str(weights), cuda=False,
              fid=True, isc=True, prc=True, batch_size=100, cache=False, verbose=False, save_cpu_ram=True)
    fid = {name: torch_fidelity.calculate_metrics(input1=UInt8Images(images), input2=UInt8Images(other), **kw)
           for name, other in [("same", images.clone()), ("noise", noise), ("resampled", resampled)]}
    # untrained weights give features of scale ~0.05, so FIDs are small in absolute terms
    assert abs(fid["same"]["frechet_inception_distance"]) < 1e-6
    assert fid["noise"]["frechet_inception_distance"] > 0.1
    assert fid["resampled"]["frechet_inception_distance"] < fid["noise"]["frechet_inception_distance"] / 10
    assert fid["same"]["precision"] == pytest.approx(1.0) and fid["noise"]["precision"] < 0.5
    assert fid["same"]["inception_score_mean"] >= 1.0
