"""Patient bootstrap intervals: sklearn-exact on every resample, patients kept whole, nominal
coverage in simulation, agreement with DeLong; DeLong against its pairwise definition."""

import math
import time
from statistics import NormalDist

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxfundus.evaluate import intervals as iv


def resampled_rows(weights: np.ndarray) -> list[np.ndarray]:
    """Each resample as explicit row indices (image i repeated weights[r, i] times)."""
    rows = np.arange(weights.shape[1])
    return [np.repeat(rows, w.astype(np.int64)) for w in weights]


def clustered_case(seed: int, n_patients: int = 60, positive_rate: float = 0.15):
    """1-4 images per patient; rounded scores give ties."""
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 5, n_patients)
    patient_ids = np.repeat([f"P{p:03d}" for p in range(n_patients)], per_patient)
    n = patient_ids.size
    labels = (rng.uniform(size=n) < positive_rate).astype(int)
    labels[:2] = (0, 1)
    scores = np.round(rng.normal(size=n) + labels, 1)
    return patient_ids, labels, scores


def sklearn_binary(name, y, s, p):
    return {
        "auroc": lambda: skm.roc_auc_score(y, s) if 0 < y.sum() < y.size else math.nan,
        "auprc": lambda: skm.average_precision_score(y, s) if y.any() else math.nan,
        "accuracy": lambda: skm.accuracy_score(y, p),
        "balanced_accuracy": lambda: skm.balanced_accuracy_score(y, p),
        "f1": lambda: skm.f1_score(y, p, zero_division=0.0),
        "sensitivity": lambda: skm.recall_score(y, p) if y.any() else math.nan,
        "specificity": lambda: skm.recall_score(y, p, pos_label=0) if not y.all() else math.nan,
    }[name]()


# (seed, patients, positive rate): the small rare-positive cases leave resamples with one class.
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("case", [(0, 60, 0.15), (1, 8, 0.1), (2, 8, 0.1)])
def test_binary_statistics_equal_sklearn_on_every_resample(case):
    seed, n_patients, positive_rate = case
    patient_ids, y, s = clustered_case(seed, n_patients, positive_rate)
    p = (s >= 0.6).astype(int)
    weights = iv.resample_weights(patient_ids, 60, seed=seed)
    for name, statistic in iv.binary_statistics(y, s, p).items():
        values = statistic(weights)
        expected = [sklearn_binary(name, y[r], s[r], p[r]) for r in resampled_rows(weights)]
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12, err_msg=name)
    if n_patients < 10:
        assert np.isnan(iv.auroc(y, s)(weights)).any()


def per_class_sklearn_mean(labels_onehot, probs):
    defined = [skm.roc_auc_score(labels_onehot[:, c], probs[:, c])
               for c in range(probs.shape[1]) if 0 < labels_onehot[:, c].sum() < len(probs)]
    return np.mean(defined) if defined else math.nan


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_multi_class_and_multi_label_statistics_equal_sklearn():
    rng = np.random.default_rng(3)
    n, n_classes = 90, 4
    patient_ids = rng.integers(0, 45, n)
    labels = rng.choice(n_classes, n, p=[0.6, 0.3, 0.08, 0.02])
    probs = rng.dirichlet(np.ones(n_classes), n) + 0.3 * np.eye(n_classes)[labels]
    weights = iv.resample_weights(patient_ids, 40, seed=1)
    single = iv.single_label_statistics(labels, probs)
    assert set(single) == {"accuracy", "balanced_accuracy", "macro_auroc"}
    for w, r in zip(weights, resampled_rows(weights), strict=True):
        y, pr = labels[r], probs[r]
        assert single["accuracy"](w[None])[0] == pytest.approx(
            skm.accuracy_score(y, pr.argmax(1)), abs=1e-12)
        assert single["balanced_accuracy"](w[None])[0] == pytest.approx(
            skm.balanced_accuracy_score(y, pr.argmax(1)), abs=1e-12)
        onehot = np.eye(n_classes)[y]
        assert single["macro_auroc"](w[None])[0] == pytest.approx(
            per_class_sklearn_mean(onehot, pr), abs=1e-12)
        if all(0 < onehot[:, c].sum() < y.size for c in range(n_classes)):
            assert single["macro_auroc"](w[None])[0] == pytest.approx(
                skm.roc_auc_score(y, pr, multi_class="ovr"), abs=1e-12)

    label_matrix = (rng.uniform(size=(n, 3)) < [0.5, 0.2, 0.05]).astype(int)
    multi = iv.multi_label_statistics(label_matrix, probs[:, :3], ["a", "b", "c"])
    assert set(multi) == {"macro_auroc", "auroc_a", "auroc_b", "auroc_c"}
    for w, r in zip(weights, resampled_rows(weights), strict=True):
        assert multi["macro_auroc"](w[None])[0] == pytest.approx(
            per_class_sklearn_mean(label_matrix[r], probs[r, :3]), abs=1e-12)


def test_two_class_softmax_gets_binary_statistics_of_class_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    p1 = np.clip(0.3 * labels + rng.uniform(size=50) * 0.7, 0, 1)
    probs = np.column_stack([1 - p1, p1])
    stats = iv.single_label_statistics(labels, probs)
    ones = np.ones((1, 50))
    assert stats["auroc"](ones)[0] == pytest.approx(skm.roc_auc_score(labels, p1))
    assert stats["macro_auroc"](ones)[0] == stats["auroc"](ones)[0]
    assert stats["sensitivity"](ones)[0] == pytest.approx(skm.recall_score(labels, p1 > 0.5))


def test_from_metric_wraps_any_metric_the_slow_way():
    patient_ids, y, s = clustered_case(5)
    weights = iv.resample_weights(patient_ids, 30, seed=2)

    def sklearn_auroc(y, s):
        return skm.roc_auc_score(y, s) if 0 < y.sum() < y.size else math.nan

    np.testing.assert_allclose(iv.from_metric(sklearn_auroc, y, s)(weights),
                               iv.auroc(y, s)(weights), atol=1e-12)


def test_patient_resampling_keeps_a_patients_images_together():
    patient_ids, _, _ = clustered_case(0)
    weights = iv.resample_weights(patient_ids, 200, seed=0)
    assert weights.shape == (200, patient_ids.size)
    np.testing.assert_array_equal(weights, np.round(weights))
    for pid in np.unique(patient_ids):
        images = weights[:, patient_ids == pid]
        assert np.all(images == images[:, :1])  # one draw count per patient
    # Each resample draws as many patients as there are.
    first_image = np.unique(patient_ids, return_index=True)[1]
    np.testing.assert_array_equal(weights[:, first_image].sum(axis=1), len(first_image))


def test_resamples_follow_patient_ids_not_row_order():
    patient_ids, y, s = clustered_case(1)
    order = np.random.default_rng(0).permutation(y.size)
    a = iv.bootstrap(iv.binary_statistics(y, s, s > 0.5), patient_ids, seed=7)
    b = iv.bootstrap(iv.binary_statistics(y[order], s[order], s[order] > 0.5),
                     patient_ids[order], seed=7)
    assert a == b
    assert iv.bootstrap({"auroc": iv.auroc(y, s)}, patient_ids, seed=8)["auroc"] != a["auroc"]


def test_undefined_resamples_are_skipped_and_counted():
    # One positive patient among 20: AUROC is undefined whenever that patient is not drawn.
    patient_ids = np.repeat(np.arange(20), 2)
    y = (patient_ids == 0).astype(int)
    s = np.random.default_rng(0).normal(size=y.size) + y
    interval = iv.bootstrap({"auroc": iv.auroc(y, s)}, patient_ids, seed=3)["auroc"]
    weights = iv.resample_weights(patient_ids, 1000, seed=3)
    missing = weights[:, 0] == 0
    assert interval.n_undefined == missing.sum()
    assert 300 < interval.n_undefined < 420  # (19/20)^20 = 0.358 of 1000
    defined = iv.auroc(y, s)(weights[~missing])
    assert (interval.low, interval.high) == tuple(np.quantile(defined, [0.025, 0.975]))
    assert interval.estimate == skm.roc_auc_score(y, s)
    assert interval.to_json() == [interval.low, interval.high]

    never = iv.bootstrap({"auroc": iv.auroc(np.zeros(4, int), np.arange(4.0))}, np.arange(4))
    assert never["auroc"].n_undefined == 1000 and never["auroc"].to_json() is None


def test_clustered_data_patient_interval_is_wider_than_image_interval():
    # 50 patients x 4 images; a patient's images are all right or all wrong.
    rng = np.random.default_rng(0)
    correct_patient = rng.uniform(size=50) < 0.7
    patient_ids = np.repeat(np.arange(50), 4)
    correct = np.repeat(correct_patient, 4)
    stats = {"accuracy": iv.image_mean(correct)}
    by_patient = iv.bootstrap(stats, patient_ids)["accuracy"]
    by_image = iv.bootstrap(stats, np.arange(200))["accuracy"]
    assert by_patient.estimate == by_image.estimate == correct.mean()
    # Four identical images carry one patient's information: width ratio ~ sqrt(4) = 2.
    ratio = (by_patient.high - by_patient.low) / (by_image.high - by_image.low)
    assert 1.6 < ratio < 2.5


COVERAGE_RUNS = 200
# Binomial standard error of an estimated 0.95 coverage from 200 runs is 0.015; allow ~3 of them.
COVERAGE_TOLERANCE = 0.045


def test_auroc_interval_covers_the_true_value_at_the_nominal_rate():
    # Binormal scores, negatives N(0, 1), positives N(1, 1): AUROC = Phi(1 / sqrt(2)).
    true_auroc = NormalDist().cdf(1 / math.sqrt(2))
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    covered = 0
    for run in range(COVERAGE_RUNS):
        scores = rng.normal(size=100) + labels
        interval = iv.bootstrap({"auroc": iv.auroc(labels, scores)}, np.arange(100),
                                seed=run)["auroc"]
        covered += interval.low <= true_auroc <= interval.high
    assert abs(covered / COVERAGE_RUNS - 0.95) <= COVERAGE_TOLERANCE


def test_patient_interval_covers_clustered_truth_and_image_interval_does_not():
    # 40 patients x 3 images, each patient all right (p = 0.8) or all wrong: accuracy 0.8.
    rng = np.random.default_rng(1)
    patient_ids = np.repeat(np.arange(40), 3)
    covered = {"patient": 0, "image": 0}
    for run in range(COVERAGE_RUNS):
        correct = np.repeat(rng.uniform(size=40) < 0.8, 3)
        stats = {"accuracy": iv.image_mean(correct)}
        for level, ids in (("patient", patient_ids), ("image", np.arange(120))):
            interval = iv.bootstrap(stats, ids, seed=run, n_resamples=500)["accuracy"]
            covered[level] += interval.low <= 0.8 <= interval.high
    assert abs(covered["patient"] / COVERAGE_RUNS - 0.95) <= COVERAGE_TOLERANCE
    # Image resampling treats 3 copies as 3 patients: its interval is sqrt(3) too narrow.
    assert covered["image"] / COVERAGE_RUNS < 0.85


def test_bootstrap_auroc_interval_agrees_with_delong_on_a_known_answer():
    true_auroc = NormalDist().cdf(1 / math.sqrt(2))
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1], 400)
    scores = rng.normal(size=800) + labels
    delong = iv.delong_auroc(labels, scores)
    boot = iv.bootstrap({"auroc": iv.auroc(labels, scores)}, np.arange(800), seed=0)["auroc"]
    assert delong.auroc == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert boot.estimate == pytest.approx(delong.auroc, abs=1e-12)
    assert delong.low <= true_auroc <= delong.high and boot.low <= true_auroc <= boot.high
    assert boot.low == pytest.approx(delong.low, abs=0.006)
    assert boot.high == pytest.approx(delong.high, abs=0.006)
    # Hanley & McNeil's large-sample variance for the binormal case is close to DeLong's.
    q1, q2 = true_auroc / (2 - true_auroc), 2 * true_auroc**2 / (1 + true_auroc)
    hanley = (true_auroc * (1 - true_auroc) + 399 * (q1 - true_auroc**2)
              + 399 * (q2 - true_auroc**2)) / 400**2
    assert delong.variance == pytest.approx(hanley, rel=0.15)


def pairwise_components(y, s):
    """DeLong's placements from the full positive x negative comparison matrix."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


@pytest.mark.parametrize("seed", range(4))
def test_delong_matches_its_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:4] = (0, 0, 1, 1)
    a = np.round(rng.normal(size=60) + y, 1)  # ties
    b = np.round(rng.normal(size=60) + 0.5 * y, 1)
    (a10, a01), (b10, b01) = pairwise_components(y, a), pairwise_components(y, b)
    m, n = a10.size, a01.size

    delong = iv.delong_auroc(y, a)
    assert delong.auroc == pytest.approx(skm.roc_auc_score(y, a), abs=1e-12)
    assert delong.variance == pytest.approx(np.var(a10, ddof=1) / m + np.var(a01, ddof=1) / n,
                                            rel=1e-10)
    z = NormalDist().inv_cdf(0.975)
    assert delong.low == pytest.approx(max(0, delong.auroc - z * math.sqrt(delong.variance)))

    comparison = iv.compare_aurocs(y, a, b, np.arange(60), n_resamples=200)
    variance = np.var(a10 - b10, ddof=1) / m + np.var(a01 - b01, ddof=1) / n
    z_diff = (a10.mean() - b10.mean()) / math.sqrt(variance)
    assert comparison.p_value == pytest.approx(2 * (1 - NormalDist().cdf(abs(z_diff))), rel=1e-9)
    assert comparison.difference.estimate == pytest.approx(
        skm.roc_auc_score(y, a) - skm.roc_auc_score(y, b), abs=1e-12)


def test_comparing_identical_scores_gives_zero_difference_and_p_one():
    patient_ids, y, s = clustered_case(2)
    comparison = iv.compare_aurocs(y, s, s.copy(), patient_ids)
    assert comparison.difference.estimate == 0.0
    assert comparison.difference.to_json() == [0.0, 0.0]
    assert comparison.p_value == 1.0
    assert comparison.to_dict()["p_value"] == 1.0


def test_comparison_detects_a_real_difference_and_is_antisymmetric():
    rng = np.random.default_rng(0)
    patient_ids = np.repeat(np.arange(100), 2)
    y = np.repeat(rng.integers(0, 2, 100), 2)
    good = rng.normal(size=200) + 1.5 * y
    weak = rng.normal(size=200) + 0.3 * y
    ab = iv.compare_aurocs(y, good, weak, patient_ids)
    ba = iv.compare_aurocs(y, weak, good, patient_ids)
    assert ab.p_value < 1e-4 and ab.difference.low > 0
    assert ba.p_value == pytest.approx(ab.p_value)
    assert ba.difference.estimate == -ab.difference.estimate
    assert (ba.difference.low, ba.difference.high) == pytest.approx(
        (-ab.difference.high, -ab.difference.low))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="over 3 images but 2 patient_ids"):
        iv.bootstrap({"auroc": iv.auroc([0, 1, 1], [0.1, 0.2, 0.3])}, [1, 2])
    with pytest.raises(ValueError, match=r"labels\[1\] = 2"):
        iv.auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"scores\[2\] is not finite"):
        iv.auroc([0, 1, 1], [0.1, 0.2, np.nan])
    with pytest.raises(ValueError, match=">= 2 positives"):
        iv.delong_auroc([0, 0, 1], [0.1, 0.2, 0.3])


def test_all_headline_metrics_of_300_images_take_well_under_two_seconds():
    rng = np.random.default_rng(0)
    patient_ids = np.repeat(np.arange(150), 2)
    y = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + y
    labels5 = rng.integers(0, 5, 300)
    probs5 = rng.dirichlet(np.ones(5), 300)
    stats = {**iv.binary_statistics(y, scores, scores > 0.5),
             **{f"five_{k}": v for k, v in iv.single_label_statistics(labels5, probs5).items()}}
    start = time.perf_counter()
    iv.bootstrap(stats, patient_ids)
    assert time.perf_counter() - start < 2.0
