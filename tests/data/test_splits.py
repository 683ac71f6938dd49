import numpy as np
import pandas as pd
import pytest

from jaxfundus.config import load_task
from jaxfundus.data.labels import DISEASES
from jaxfundus.data.selection import select_multi_label, select_single_label
from jaxfundus.data.splits import assign_splits


def _groups_and_strata(seed=0, n=600, n_patients=220):
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n_patients, n)
    strata = (patients % 5 + rng.integers(0, 2, n)) % 5  # patients mostly share a class
    return np.array([f"{p:05d}" for p in patients]), strata


def test_holdout_is_patient_disjoint_and_sized():
    groups, strata = _groups_and_strata()
    split = assign_splits(groups, strata, seed=3)
    sets = {name: set(groups[split == name]) for name in ("train", "val", "test")}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    fractions = {name: np.mean(split == name) for name in sets}
    assert abs(fractions["test"] - 0.2) < 0.05
    assert abs(fractions["val"] - 0.2) < 0.05  # 0.25 of the remaining 0.8


def test_kfold_test_sets_partition_patients():
    groups, strata = _groups_and_strata()
    tests = [assign_splits(groups, strata, seed=0, folds=4, fold=f) == "test" for f in range(4)]
    assert np.array_equal(np.sum(tests, axis=0), np.ones(len(groups)))  # each image tested once
    for f, is_test in enumerate(tests):
        split = assign_splits(groups, strata, seed=0, folds=4, fold=f)
        assert not set(groups[is_test]) & set(groups[split != "test"])
        for cls in range(5):  # stratified: every class reaches every test fold
            assert np.any(is_test & (strata == cls))


def test_split_is_deterministic_and_seeded():
    groups, strata = _groups_and_strata()
    a = assign_splits(groups, strata, seed=1, folds=4, fold=2)
    assert np.array_equal(a, assign_splits(groups, strata, seed=1, folds=4, fold=2))
    assert not np.array_equal(a, assign_splits(groups, strata, seed=2, folds=4, fold=2))


def test_bad_fold_rejected():
    groups, strata = _groups_and_strata()
    with pytest.raises(ValueError, match="fold 4"):
        assign_splits(groups, strata, seed=0, folds=4, fold=4)


def _index(rows):
    frame = pd.DataFrame(rows, columns=["patient_id", *DISEASES])
    frame.insert(0, "index", range(len(frame)))
    frame.insert(1, "filename", [f"{i:06d}_01.jpg" for i in range(len(frame))])
    return frame


def _row(patient, *labels):
    return [patient] + [int(d in labels) for d in DISEASES]


def test_single_label_rule_counts_what_it_drops():
    rows = ([_row(f"{i:05d}") for i in range(10)] + [_row(f"1{i:04d}", "Gla") for i in range(10)]
            + [_row(f"2{i:04d}", "DR", "DM") for i in range(10)]
            + [_row(f"3{i:04d}", "Gla", "DR") for i in range(3)]
            + [_row(f"4{i:04d}", "AMD") for i in range(4)])
    examples = select_single_label(_index(rows), load_task("three-class"), seed=0)
    assert examples.classes == ("normal", "Gla", "DR")
    assert np.bincount(examples.frame["label"]).tolist() == [10, 10, 10]  # DR+DM counts as DR
    assert examples.dropped == {"no task class": 4, "more than one task class": 3}


def test_normals_sampled_to_match_the_disease():
    rows = [_row(f"{i:05d}") for i in range(50)] + [_row(f"9{i:04d}", "MH") for i in range(12)]
    examples = select_single_label(_index(rows), load_task("normal-vs-mh"), seed=0)
    assert np.bincount(examples.frame["label"]).tolist() == [12, 12]
    assert examples.dropped["normals not sampled"] == 38


def test_multi_label_keeps_co_occurring_diseases():
    rows = ([_row(f"{i:05d}") for i in range(5)]
            + [_row(f"1{i:04d}", *DISEASES) for i in range(10)])
    examples = select_multi_label(_index(rows), load_task("ten-class"), seed=0)
    assert examples.label_columns == [f"label_{d}" for d in DISEASES]
    assert examples.frame[examples.label_columns].to_numpy().sum() == 90


def test_too_few_images_fails_naming_the_class():
    from jaxfundus.config import ConfigError

    rows = [_row(f"{i:05d}", "RVO") for i in range(20)]
    with pytest.raises(ConfigError, match="class 'AMD'.* has 0"):
        select_single_label(_index(rows), load_task("five-rare"), seed=0)


def _anomaly_data(seed=0):
    groups, _ = _groups_and_strata(seed)
    labels = (np.array([int(g) for g in groups]) % 3 == 0).astype(int)  # a third of patients ill
    return groups, labels


@pytest.mark.parametrize("test_set", ["patients", "study-imbalanced", "study-reduced"])
def test_anomaly_splits_train_on_normals_with_disjoint_patients(test_set):
    from jaxfundus.data.splits import assign_anomaly_splits

    groups, labels = _anomaly_data()
    split = assign_anomaly_splits(groups, labels, seed=0, test_set=test_set)
    assert not labels[split == "train"].any()
    used = {name: set(groups[split == name]) for name in ("train", "val", "test")}
    assert not used["train"] & used["val"] and not used["train"] & used["test"]
    assert not used["val"] & used["test"]
    for name in ("val", "test"):
        assert 0 < labels[split == name].mean() < 1


def test_study_compositions_make_the_test_set_anomalous_heavy():
    from jaxfundus.data.splits import assign_anomaly_splits

    groups, labels = _anomaly_data()
    share = {}
    for test_set in ("patients", "study-imbalanced", "study-reduced"):
        split = assign_anomaly_splits(groups, labels, seed=0, test_set=test_set)
        share[test_set] = labels[split == "test"].mean()
        n_anomalous = labels[split == "test"].sum()
        if test_set == "study-imbalanced":
            full = n_anomalous
        if test_set == "study-reduced":
            assert abs(n_anomalous / full - 866 / 1736) < 0.02
    assert share["study-imbalanced"] > share["study-reduced"] > share["patients"]


def test_holdout_keeps_each_class_share_in_every_split():
    rng = np.random.default_rng(5)
    patients = np.arange(400)
    patient_class = rng.choice(3, size=400, p=[0.6, 0.3, 0.1])
    images = rng.integers(1, 4, size=400)  # 1-3 images per patient, all of one class
    groups = np.repeat([f"{p:05d}" for p in patients], images)
    strata = np.repeat(patient_class, images)
    split = assign_splits(groups, strata, seed=0)
    overall = np.bincount(strata, minlength=3) / len(strata)
    for name in ("train", "val", "test"):
        share = np.bincount(strata[split == name], minlength=3) / np.sum(split == name)
        np.testing.assert_allclose(share, overall, atol=0.03, err_msg=name)


@pytest.mark.parametrize("fractions", [{"test_fraction": 0.0}, {"test_fraction": 1.0},
                                       {"val_fraction": 1.5}, {"val_fraction": -0.2}])
def test_a_fraction_outside_zero_one_is_refused(fractions):
    groups, strata = _groups_and_strata()
    value = next(iter(fractions.values()))
    with pytest.raises(ValueError, match=rf"split fraction must be in \(0, 1\), got {value}"):
        assign_splits(groups, strata, seed=0, **fractions)


def test_fewer_patients_than_folds_is_a_config_error_saying_what_to_change():
    from jaxfundus.config import ConfigError

    groups = np.array(["00001", "00001", "00002", "00003", "00003"])  # 3 patients, 5 images
    strata = np.array([0, 0, 1, 0, 0])
    with pytest.raises(ConfigError, match="^3 patients cannot be split into 4 patient groups "
                                          r"\(each patient's images stay together\): use data "
                                          "with more patients, fewer folds"):
        assign_splits(groups, strata, seed=0, folds=4, fold=0)


def test_unknown_anomaly_test_set_is_refused():
    from jaxfundus.data.splits import assign_anomaly_splits

    groups, labels = _anomaly_data()
    with pytest.raises(ValueError, match="^unknown anomaly test set 'study'$"):
        assign_anomaly_splits(groups, labels, seed=0, test_set="study")


@pytest.mark.parametrize("test_set", ["patients", "study-imbalanced", "study-reduced"])
def test_anomaly_split_is_the_same_for_the_same_seed(test_set):
    from jaxfundus.data.splits import assign_anomaly_splits

    groups, labels = _anomaly_data()
    first = assign_anomaly_splits(groups, labels, seed=4, test_set=test_set)
    assert np.array_equal(first, assign_anomaly_splits(groups, labels, seed=4,
                                                       test_set=test_set))
    assert not np.array_equal(first, assign_anomaly_splits(groups, labels, seed=5,
                                                           test_set=test_set))
