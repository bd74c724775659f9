"""Each loss against a hand computation."""

import math

import pytest
import torch

from zhangcolor.loss import rebalanced_cross_entropy, regression_loss


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
    from zhangcolor.loss import contrastive_loss, perceptual_loss

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
