"""ECE is ~0 for a calibrated predictor and large for an over-confident one; temperature scaling
fitted on validation finds the true temperature and lowers test ECE."""

import inspect

import numpy as np
import pytest
from sklearn.metrics import log_loss

from jaxfundus.evaluate.calibration import (
    TEMPERATURE_RANGE,
    TemperatureScaling,
    expected_calibration_error,
    logits_from_probs,
    reliability_diagram,
    top_class,
)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def softmax_case(seed: int, n: int, true_temperature: float = 1.0, n_classes: int = 4):
    """Labels drawn from softmax(z); the model reports z * true_temperature, so dividing its
    logits by true_temperature recovers calibrated probabilities."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, n_classes))
    p = softmax(z)
    labels = (p.cumsum(axis=1) < rng.uniform(size=(n, 1))).sum(axis=1)
    return z * true_temperature, labels


def sigmoid_case(seed: int, shape, true_temperature: float = 1.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=shape)
    labels = (rng.uniform(size=shape) < sigmoid(z)).astype(int)
    return z * true_temperature, labels


def test_ece_of_a_calibrated_predictor_is_near_zero_and_of_an_overconfident_one_large():
    logits, labels = softmax_case(0, 20_000)
    assert expected_calibration_error(softmax(logits), labels) < 0.015
    assert expected_calibration_error(softmax(3 * logits), labels) > 0.15

    binary_logits, binary_labels = sigmoid_case(1, 20_000)
    assert expected_calibration_error(sigmoid(binary_logits), binary_labels) < 0.015
    assert expected_calibration_error(sigmoid(3 * binary_logits), binary_labels) > 0.1


def test_ece_equals_a_direct_count_over_bins():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3) * 0.5, 200)
    probs[0] = [1 / 3, 1 / 3, 1 / 3]  # sits exactly on the right edge of bin 4 of 15
    labels = rng.integers(0, 3, 200)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    expected, counts = 0.0, []
    for k in range(15):
        lo, hi = k / 15, (k + 1) / 15
        in_bin = (confidence > lo) & (confidence <= hi) if k else confidence <= hi
        counts.append(in_bin.sum())
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    diagram = reliability_diagram(probs, labels)
    np.testing.assert_array_equal(diagram.count, counts)
    assert diagram.count[4] >= 1 and diagram.count[:4].sum() == 0
    assert diagram.ece == pytest.approx(expected, abs=1e-12)
    assert np.isnan(diagram.accuracy[0]) and diagram.to_dict()["accuracy"][0] is None
    assert diagram.to_dict()["ece"] == diagram.ece


def test_binary_and_multi_label_use_the_top_class_of_each_binary_prediction():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, 500)
    p[p == 0.5] = 0.51
    y = rng.integers(0, 2, 500)
    # A binary P(positive) is the two-class softmax [1 - p, p].
    assert expected_calibration_error(p, y) == pytest.approx(
        expected_calibration_error(np.column_stack([1 - p, p]), y), abs=1e-12)
    # Multi-label pools its (image, class) pairs one-vs-rest.
    matrix, labels = p.reshape(100, 5), y.reshape(100, 5)
    assert expected_calibration_error(matrix, labels) == pytest.approx(
        expected_calibration_error(p, y), abs=1e-12)
    confidence, correct = top_class(matrix, labels)
    assert confidence.shape == (500,) and correct.dtype == bool


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_temperature_fitted_on_validation_recovers_the_truth_and_lowers_test_ece(true_temperature):
    val_logits, val_labels = softmax_case(4, 4000, true_temperature)
    test_logits, test_labels = softmax_case(5, 4000, true_temperature)
    scaling = TemperatureScaling.fit(val_logits, val_labels)
    assert scaling.kind == "single-label"
    assert scaling.temperature == pytest.approx(true_temperature, rel=0.1)
    # Optimal on validation: nearby temperatures have a higher NLL (sklearn's log loss).
    nll = {t: log_loss(val_labels, softmax(val_logits / t), labels=range(4))
           for t in (scaling.temperature, scaling.temperature * 1.02, scaling.temperature / 1.02)}
    assert nll[scaling.temperature] < min(nll[t] for t in nll if t != scaling.temperature)
    report = scaling.ece_before_after(test_logits, test_labels)
    assert report["temperature"] == scaling.temperature
    assert report["ece_after"] < 0.03 < report["ece_before"]
    # Accuracy is unchanged: the argmax survives dividing by a positive scalar.
    np.testing.assert_array_equal(scaling.probs(test_logits).argmax(1), test_logits.argmax(1))


def test_sigmoid_temperatures_for_binary_and_multi_label():
    logits, labels = sigmoid_case(6, 5000, 2.5)
    binary = TemperatureScaling.fit(logits, labels)
    assert binary.kind == "binary" and binary.temperature == pytest.approx(2.5, rel=0.1)
    matrix, matrix_labels = sigmoid_case(7, (1000, 5), 2.5)
    multi = TemperatureScaling.fit(matrix, matrix_labels)
    assert multi.kind == "multi-label" and multi.temperature == pytest.approx(2.5, rel=0.1)
    report = multi.ece_before_after(*sigmoid_case(8, (1000, 5), 2.5))
    assert report["ece_after"] < report["ece_before"] / 2


def test_temperature_is_fitted_on_validation_data_only_and_deterministically():
    assert list(inspect.signature(TemperatureScaling.fit).parameters) == ["val_logits",
                                                                           "val_labels"]
    logits, labels = softmax_case(9, 1000, 2.0)
    first = TemperatureScaling.fit(logits, labels)
    assert TemperatureScaling.fit(logits.copy(), labels.copy()) == first
    assert TemperatureScaling.from_dict(first.to_dict()) == first


def test_calibrated_probabilities_give_temperature_one_via_logits_from_probs():
    logits, labels = softmax_case(10, 20_000)
    scaling = TemperatureScaling.fit(logits_from_probs(softmax(logits)), labels)
    assert scaling.temperature == pytest.approx(1.0, abs=0.05)
    probs = softmax(logits)
    np.testing.assert_allclose(
        TemperatureScaling(1.0, "single-label").probs(logits_from_probs(probs)), probs, atol=1e-7)
    p = sigmoid(logits[:, 0])
    np.testing.assert_allclose(TemperatureScaling(1.0, "binary").probs(logits_from_probs(p)), p,
                               atol=1e-7)


def test_perfectly_separated_validation_hits_the_temperature_floor():
    logits = np.array([[3.0, -3.0], [-3.0, 3.0]] * 10)
    labels = np.array([0, 1] * 10)
    assert TemperatureScaling.fit(logits, labels).temperature == TEMPERATURE_RANGE[0]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"labels\[1\] = 7 is not a class id in \[0, 3\)"):
        expected_calibration_error(np.full((2, 3), 1 / 3), np.array([0, 7]))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        expected_calibration_error(np.array([[2.0, -1.0]]), np.array([0]))
    with pytest.raises(ValueError, match=r"val_logits\[1\] is not finite"):
        TemperatureScaling.fit(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="got \\(3,\\) and \\(2,\\)"):
        expected_calibration_error(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    scaling = TemperatureScaling(2.0, "single-label")
    with pytest.raises(ValueError, match="fitted on single-label logits, got binary"):
        scaling.ece_before_after(np.array([0.1, 0.2]), np.array([0, 1]))
