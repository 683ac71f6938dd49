"""How each task kind turns fold models' outputs into one prediction, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jaxfundus.config import ConfigError, load_task
from jaxfundus.data.selection import TaskExamples
from jaxfundus.evaluate.thresholds import ScoreNormalizer
from jaxfundus.methods.kinds import kind_of


def _probs(*rows) -> list[dict[str, np.ndarray]]:
    """One eval output per fold model, each for one image (leading dim 1)."""
    return [{"probs": np.array([row], np.float32)} for row in rows]


def test_single_label_predicts_the_argmax_of_the_fold_mean_not_the_vote():
    spec = load_task("three-class")  # normal, Gla, DR
    # Two of three folds pick Gla narrowly; one picks DR confidently: the mean picks DR.
    outputs = _probs([0.1, 0.46, 0.44], [0.1, 0.46, 0.44], [0.0, 0.05, 0.95])
    prediction = kind_of(spec).prediction("eye.jpg", spec, outputs, [{}, {}, {}])
    mean = np.mean([o["probs"][0] for o in outputs], axis=0)
    assert prediction.probabilities == pytest.approx(dict(zip(spec.classes, mean, strict=True)))
    assert prediction.prediction == "DR"
    assert prediction.to_text() == "eye.jpg: DR (DR 0.610, Gla 0.323, normal 0.067)"
    assert json.loads(prediction.to_json()) == {
        "file": "eye.jpg", "probabilities": prediction.probabilities, "prediction": "DR"}


def test_multi_label_with_no_disease_at_the_threshold_is_normal():
    spec = load_task("ten-class")
    kind = kind_of(spec)
    below = np.full(len(spec.classes), 0.49, np.float32)
    prediction = kind.prediction("eye.jpg", spec, _probs(below, below * 0.5), [{}, {}])
    assert prediction.prediction == ["normal"]
    assert max(prediction.probabilities.values()) < kind.decision_threshold
    assert prediction.to_text().startswith("eye.jpg: ['normal'] (")


def test_multi_label_lists_every_disease_at_or_above_the_threshold_in_class_order():
    spec = load_task("ten-class")
    probs = np.full(len(spec.classes), 0.1, np.float32)
    later, earlier = spec.classes[-1], spec.classes[1]
    probs[spec.classes.index(later)] = 0.9
    probs[spec.classes.index(earlier)] = 0.5  # exactly the threshold counts
    prediction = kind_of(spec).prediction("eye.jpg", spec, _probs(probs), [{}])
    assert prediction.prediction == [earlier, later]


def test_anomaly_score_is_the_mean_of_each_folds_validation_normalised_score():
    spec = load_task("ganomaly")
    fold_metrics = [
        {"normalizer": ScoreNormalizer(low=1.0, high=3.0).to_dict(), "threshold": 0.4},
        {"normalizer": ScoreNormalizer(low=10.0, high=20.0).to_dict(), "threshold": 0.6},
    ]
    outputs = [{"score": np.array([2.0])}, {"score": np.array([16.0])}]  # 0.5 and 0.6
    prediction = kind_of(spec).prediction("eye.jpg", spec, outputs, fold_metrics)
    assert prediction.score == pytest.approx(0.55)
    assert prediction.threshold == pytest.approx(0.5)
    assert prediction.anomalous is True and prediction.probabilities is None
    assert prediction.to_text() == "eye.jpg: score 0.5500 (threshold 0.5000) ANOMALOUS"
    record = json.loads(prediction.to_json())
    assert record == {"file": "eye.jpg", "score": pytest.approx(0.55), "anomalous": True,
                      "threshold": pytest.approx(0.5)}

    lower = [{"score": np.array([1.5])}, {"score": np.array([12.0])}]  # 0.25 and 0.2
    normal = kind_of(spec).prediction("eye.jpg", spec, lower, fold_metrics)
    assert normal.anomalous is False
    assert normal.to_text() == "eye.jpg: score 0.2250 (threshold 0.5000) normal"


def _anomaly_examples(labels: list[int]) -> TaskExamples:
    frame = pd.DataFrame({"index": range(len(labels)), "patient_id": [f"{i:05d}" for i in
                                                                       range(len(labels))],
                          "label": labels})
    frame["stratum"] = frame["label"]
    return TaskExamples(frame, ("normal", "abnormal"), {})


@pytest.mark.parametrize(("val_label", "word"), [(0, "normal"), (1, "anomalous")])
def test_anomaly_validation_split_of_one_class_is_refused_before_training(val_label, word):
    labels = [0, 0, 0, 1, val_label, val_label, 0, 1]
    split = np.array(["train", "train", "train", "unused", "val", "val", "test", "test"])
    kind = kind_of(load_task("ganomaly"))
    with pytest.raises(ConfigError, match=f"^fold 2: the validation split has 2 images, all "
                                          f"{word}; the decision threshold needs both"):
        kind.check_split(_anomaly_examples(labels), split, 2)
    labels[5] = 1 - val_label
    kind.check_split(_anomaly_examples(labels), split, 2)  # both classes: accepted
