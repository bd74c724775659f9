"""The paper's AuC (section 3.1) against a direct numpy statement of it."""

import numpy as np
import pytest
import torch

from zhangcolor.metrics import auc, within_thresholds


def numpy_auc(pred: np.ndarray, true: np.ndarray, weight: np.ndarray) -> float:
    """Mean over thresholds t = 0..150 of the weighted share of pixels with ab error <= t."""
    error = np.linalg.norm(pred - true, axis=1).ravel()
    w = weight.ravel()
    return float(np.mean([(w * (error <= t)).sum() / w.sum() for t in range(151)]) * 100)


def test_auc_with_a_mask_and_pixel_weights_matches_numpy():
    rng = np.random.default_rng(0)
    true = rng.uniform(-80, 80, (3, 2, 10, 12))
    pred = true + rng.normal(0, 25, true.shape)
    mask = rng.random((3, 10, 12)) > 0.3
    weight = rng.uniform(0.2, 5.0, (3, 10, 12))
    t = [torch.from_numpy(x) for x in (pred, true)]
    assert auc(*t) == pytest.approx(numpy_auc(pred, true, np.ones((3, 10, 12))), abs=1e-9)
    assert auc(*t, torch.from_numpy(mask)) == pytest.approx(
        numpy_auc(pred, true, mask.astype(float)), abs=1e-9
    )
    assert auc(*t, torch.from_numpy(mask), torch.from_numpy(weight)) == pytest.approx(
        numpy_auc(pred, true, weight * mask), abs=1e-9
    )


def test_errors_on_a_threshold_count_as_within_it():
    true = torch.zeros(1, 2, 1, 3)
    pred = torch.tensor([[[[3.0, 0.0, 200.0]], [[4.0, 0.0, 0.0]]]])  # errors 5, 0 and 200
    sums = within_thresholds(pred, true)
    assert sums.tolist()[:7] == [1, 1, 1, 1, 1, 2, 2] and sums[-1] == 2  # 200 > 150: never
    assert auc(pred, pred) == pytest.approx(100.0)
