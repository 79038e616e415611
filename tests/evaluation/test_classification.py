"""Classification metrics against values worked out by hand."""
from __future__ import annotations

import pytest

from weitiao.evaluation.classification import balanced_class_weights, classification_metrics


def test_metrics_match_a_hand_computed_example():
    labels = ["a", "b", "c"]
    golds = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(golds, preds, labels)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: P 2/2 R 2/3 F1 0.8; b: P 1/2 R 1/2 F1 0.5; c: P 1/2 R 1/1 F1 2/3
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["per_class"]["a"]["support"] == 3


def test_never_predicted_and_absent_classes():
    m = classification_metrics([0, 0, 1], [0, 0, 0], ["x", "y", "z"])
    assert m["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # z has no rows: left out of the macro mean; x: P 2/3 R 1 F1 0.8
    assert m["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)


def test_balanced_weights_give_every_class_the_same_total():
    counts = [80, 15, 5]
    weights = balanced_class_weights(counts)
    totals = [w * c for w, c in zip(weights, counts)]
    assert totals == pytest.approx([100 / 3] * 3)
