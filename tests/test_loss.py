"""Each loss against a hand computation, and each head's criterion against float64 numpy."""

import math

import numpy as np
import pytest
import torch

from zhangcolor.bins import load_bins
from zhangcolor.color import lab_to_rgb
from zhangcolor.loss import (
    build_criterion,
    contrastive_loss,
    perceptual_loss,
    rebalanced_cross_entropy,
    regression_loss,
    targets_at_output,
)
from zhangcolor.options import ModelConfig, TrainConfig


def test_cross_entropy_by_hand():
    # One image, 2×1 pixels, Q = 3 bins, k = 2 neighbours.
    logits = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]], [[2.0, 0.0]]]])  # (1, 3, 1, 2)
    index = torch.tensor([[[[2, 0]], [[1, 1]]]])  # nearest bin first: pixel 0 -> 2, pixel 1 -> 0
    weight = torch.tensor([[[[0.75, 0.5]], [[0.25, 0.5]]]])
    class_w = torch.tensor([0.5, 1.0, 2.0])

    def log_softmax(values):
        z = math.log(sum(math.exp(v) for v in values))
        return [v - z for v in values]

    p0, p1 = log_softmax([0.0, 1.0, 2.0]), log_softmax([1.0, 0.0, 0.0])
    ce0 = -(0.75 * p0[2] + 0.25 * p0[1])
    ce1 = -(0.5 * p1[0] + 0.5 * p1[1])
    plain = rebalanced_cross_entropy(logits, index, weight, None)
    assert plain.item() == pytest.approx((ce0 + ce1) / 2)
    rebalanced = rebalanced_cross_entropy(logits, index, weight, class_w)
    assert rebalanced.item() == pytest.approx((2.0 * ce0 + 0.5 * ce1) / 2)  # w of the nearest bin
    masked = rebalanced_cross_entropy(
        logits, index, weight, class_w, torch.tensor([[[True, False]]])
    )
    assert masked.item() == pytest.approx(2.0 * ce0)


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("l1", (3 + 4 + 0 + 1) / 2),
        ("l2", (9 + 16 + 0 + 1) / 2),
        ("huber", (2 * (3 - 1) + 2 * (4 - 1) + 0 + 0.5) / 2),
    ],
)
def test_regression_losses_by_hand(kind, expected):
    pred = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])  # (1, 2, 1, 2): ab per pixel
    target = torch.zeros(1, 2, 1, 2)
    assert regression_loss(pred, target, kind, delta=2.0).item() == pytest.approx(expected)
    mask = torch.tensor([[[False, True]]])
    only_second = {"l1": 1.0, "l2": 1.0, "huber": 0.5}[kind]  # huber: ½·1² below δ
    assert regression_loss(pred, target, kind, delta=2.0, mask=mask).item() == pytest.approx(
        only_second
    )


def test_unknown_regression_loss_lists_the_valid_ones():
    with pytest.raises(ValueError, match="l1, l2, huber"):
        regression_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), "l3")


def test_the_feature_losses_vanish_at_the_truth_and_rank_the_gray_image_worst():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    features = lambda x: [encoder(x), encoder(x)[:, :, ::2, ::2]]  # noqa: E731  (two "taps")
    truth = torch.rand(2, 3, 16, 16)
    gray = truth.mean(1, keepdim=True).expand_as(truth)
    near = (truth + 0.05 * torch.randn_like(truth)).clamp(0, 1).requires_grad_()
    assert perceptual_loss(truth, truth, features) == 0
    assert contrastive_loss(truth, truth, gray, features) == 0
    assert perceptual_loss(near, truth, features) < perceptual_loss(gray, truth, features)
    ratio_near = contrastive_loss(near, truth, gray, features)
    assert ratio_near < 1.0 < contrastive_loss(gray + 0.01, truth, gray, features)
    ratio_near.backward()
    assert near.grad is not None and torch.isfinite(near.grad).all()


# ----------------------------------------------------------------------------- the criterion


def truth(seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A crop's L ``(2, 1, size, size)`` in [30, 70], in-gamut ab and a mask with holes."""
    g = torch.Generator().manual_seed(seed)
    lightness = 30 + 40 * torch.rand(2, 1, size, size, generator=g)
    ab = 30 * torch.rand(2, 2, size, size, generator=g) - 15
    mask = torch.rand(2, size, size, generator=g) > 0.03
    return lightness, ab, mask


def blocks(x: np.ndarray) -> np.ndarray:
    """``(B, C, H, W)`` -> ``(B, C, H/4, W/4, 16)``: each 4×4 block's pixels."""
    b, c, h, w = x.shape
    return (
        x.reshape(b, c, h // 4, 4, w // 4, 4)
        .transpose(0, 1, 2, 4, 3, 5)
        .reshape(b, c, h // 4, w // 4, 16)
    )


def test_targets_at_output_average_each_4x4_block_and_need_all_of_it():
    _, ab, mask = truth()
    small_ab, small_mask = targets_at_output(ab, mask)
    np.testing.assert_allclose(small_ab.numpy(), blocks(ab.double().numpy()).mean(-1), rtol=1e-5)
    expected = blocks(mask.numpy()[:, None]).all(-1)[:, 0]
    assert np.array_equal(small_mask.numpy(), expected) and not expected.all()


def reference_cross_entropy(logits, ab, mask, centers, class_weights) -> float:
    """Eq. 2-3 in float64 numpy: soft-encode the block means over their 5 nearest bins (σ = 5),
    cross-entropy, w of the nearest bin, mean over the blocks whose 16 pixels all count."""
    small = blocks(ab.double().numpy()).mean(-1).transpose(0, 2, 3, 1)  # (B, h, w, 2)
    dist2 = np.square(small[..., None, :] - centers.numpy()).sum(-1)  # (B, h, w, Q)
    nearest = np.argsort(dist2, -1, kind="stable")[..., :5]
    z = np.exp(-np.take_along_axis(dist2, nearest, -1) / (2 * 5.0**2))
    z /= z.sum(-1, keepdims=True)
    x = logits.double().numpy().transpose(0, 2, 3, 1)  # (B, h, w, Q)
    log_p = x - x.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    cross = -(z * np.take_along_axis(log_p, nearest, -1)).sum(-1)
    if class_weights is not None:
        cross = cross * class_weights.numpy()[nearest[..., 0]]
    valid = blocks(mask.numpy()[:, None]).all(-1)[:, 0]
    return float((cross * valid).sum() / valid.sum())


@pytest.mark.parametrize("rebalance", [True, False])
def test_the_classification_criterion_is_eq_2_and_3_against_numpy(rebalance):
    bins = load_bins()
    config = TrainConfig(rebalance=rebalance)
    criterion = build_criterion(config, {k: v.float() for k, v in bins.items()})
    lightness, ab, mask = truth(1)
    logits = torch.randn(2, 313, 4, 4, generator=torch.Generator().manual_seed(2))
    weights = bins["weights"] if rebalance else None
    expected = reference_cross_entropy(logits, ab, mask, bins["centers"], weights)
    assert criterion(logits, lightness, ab, mask).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["l1", "l2", "huber"])
def test_the_regression_criterion_compares_block_means_of_ab(kind):
    config = TrainConfig(model=ModelConfig(head="regression"), loss=kind, huber_delta=3.0)
    criterion = build_criterion(config, {})
    lightness, ab, mask = truth(3)
    pred = 10 * torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    error = pred.double().numpy() - blocks(ab.double().numpy()).mean(-1)
    per = {
        "l1": np.abs(error),
        "l2": np.square(error),
        "huber": np.where(np.abs(error) <= 3, 0.5 * error**2, 3 * (np.abs(error) - 1.5)),
    }[kind].sum(1)
    valid = blocks(mask.numpy()[:, None]).all(-1)[:, 0]
    expected = (per * valid).sum() / valid.sum()
    assert criterion(pred, lightness, ab, mask).item() == pytest.approx(expected, rel=1e-5)


def test_the_rgb_criterion_compares_block_means_of_srgb_against_skimage():
    from skimage.color import lab2rgb

    criterion = build_criterion(TrainConfig(model=ModelConfig(head="rgb-regression")), {})
    lightness, ab, mask = truth(5)
    lab = torch.cat([lightness, ab], 1).double().numpy()
    rgb = np.stack([lab2rgb(image.transpose(1, 2, 0)).transpose(2, 0, 1) for image in lab])
    pred = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    per = np.square(pred.double().numpy() - blocks(rgb).mean(-1)).sum(1)
    valid = blocks(mask.numpy()[:, None]).all(-1)[:, 0]
    expected = (per * valid).sum() / valid.sum()
    assert criterion(pred, lightness, ab, mask).item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kind", ["l2+perceptual", "l2+contrastive"])
def test_the_feature_criteria_add_their_weighted_term_to_l2(kind):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    encoder = lambda x: [conv(x), conv(x)[:, :, ::2, ::2]]  # noqa: E731  (two "taps")
    config = TrainConfig(model=ModelConfig(head="regression"), loss=kind, feature_weight=0.25)
    with pytest.raises(ValueError, match="needs the frozen feature encoder"):
        build_criterion(config, {})
    criterion = build_criterion(config, {}, encoder)
    lightness, ab, mask = truth(7)
    pred = 10 * torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(8))
    small_ab, small_mask = targets_at_output(ab, mask)
    l2 = regression_loss(pred, small_ab, "l2", mask=small_mask)
    up = torch.nn.functional.interpolate(pred, size=(16, 16), mode="bilinear")
    true_rgb = lab_to_rgb(torch.cat([lightness, ab], 1))
    pred_rgb = torch.where(mask[:, None], lab_to_rgb(torch.cat([lightness, up], 1)), true_rgb)
    if kind == "l2+perceptual":
        term = perceptual_loss(pred_rgb, true_rgb, encoder)
    else:
        gray = lab_to_rgb(torch.cat([lightness, torch.zeros_like(ab)], 1))
        term = contrastive_loss(pred_rgb, true_rgb, gray, encoder)
    assert term > 0
    got = criterion(pred, lightness, ab, mask)
    assert got.item() == pytest.approx((l2 + 0.25 * term).item(), rel=1e-6)
