"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest

from tablebatch.jobs.metrics import classification_metrics, evaluation_stats, length_stats


def test_classification_metrics_by_hand() -> None:
    gold = ["pos", "pos", "pos", "neg", "neg", "neu"]
    pred = ["pos", "neg", "INVALID", "neg", "neg", "pos"]
    m = classification_metrics(pred, gold, ["pos", "neg", "neu"], "INVALID")
    assert m["accuracy"] == pytest.approx(3 / 6)
    # pos: tp 1, predicted 2, support 3 -> P 1/2, R 1/3, F1 0.4
    assert m["per_label"]["pos"]["precision"] == pytest.approx(0.5)
    assert m["per_label"]["pos"]["recall"] == pytest.approx(1 / 3)
    assert m["per_label"]["pos"]["f1"] == pytest.approx(0.4)
    # neg: tp 2, predicted 3, support 2 -> P 2/3, R 1, F1 0.8
    assert m["per_label"]["neg"]["f1"] == pytest.approx(0.8)
    # neu: tp 0 -> F1 0
    assert m["per_label"]["neu"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    assert m["invalid_answers"] == 1
    assert m["confusion_matrix"]["rows"]["pos"] == {"pos": 1, "neg": 1, "neu": 0, "INVALID": 1}
    assert m["confusion_matrix"]["labels"] == ["pos", "neg", "neu", "INVALID"]


def test_length_and_evaluation_stats() -> None:
    assert length_stats(["a b c", "a"]) == {
        "count": 2,
        "mean_words": 2.0,
        "median_words": 2.0,
        "min_words": 1,
        "max_words": 3,
    }
    stats = evaluation_stats([1.0, 0.0, None, 1.0])
    assert stats == {
        "scored": 3,
        "unscored": 1,
        "mean_score": pytest.approx(2 / 3),
        "pass_rate": pytest.approx(2 / 3),
    }
    assert evaluation_stats([None])["mean_score"] is None
