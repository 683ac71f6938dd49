"""Patient-grouped, class-stratified, seeded train/val/test assignment (holdout and k-fold).

The study split images; one patient's eyes and visits then sat on both sides. Here every
image of a patient lands in the same split of a run.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from jaxfundus.config import ConfigError

TRAIN, VAL, TEST = "train", "val", "test"


def assign_splits(
    groups: np.ndarray,
    strata: np.ndarray,
    *,
    seed: int,
    folds: int = 0,
    fold: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.25,
) -> np.ndarray:
    """Return an object array of 'train'/'val'/'test', one entry per image.

    groups: patient id per image; strata: class (or stratum) id per image.
    folds == 0: holdout with `test_fraction` for test; folds = k: test is patient fold `fold`
    of k. In both cases `val_fraction` of the remaining patients becomes validation.
    """
    groups = np.asarray(groups)
    strata = np.asarray(strata)
    if folds:
        if not 0 <= fold < folds:
            raise ValueError(f"fold {fold} is outside 0..{folds - 1}")
        test_mask = _fold_mask(groups, strata, n_splits=folds, which=fold, seed=seed)
    else:
        test_mask = _fold_mask(groups, strata, n_splits=_n_splits(test_fraction), which=0,
                               seed=seed)
    rest = np.flatnonzero(~test_mask)
    val_in_rest = _fold_mask(
        groups[rest], strata[rest], n_splits=_n_splits(val_fraction), which=0, seed=seed + 1
    )
    split = np.full(len(groups), TRAIN, dtype=object)
    split[test_mask] = TEST
    split[rest[val_in_rest]] = VAL
    return split


def _n_splits(fraction: float) -> int:
    if not 0 < fraction < 1:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    return max(2, round(1 / fraction))


def _fold_mask(
    groups: np.ndarray, strata: np.ndarray, *, n_splits: int, which: int, seed: int
) -> np.ndarray:
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ConfigError(f"{n_groups} patients cannot be split into {n_splits} patient groups "
                          "(each patient's images stay together): use data with more patients, "
                          "fewer folds or a larger split fraction")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare classes with fewer patients than folds are expected (e.g. AO); they still split.
        warnings.filterwarnings("ignore", message="The least populated class")
        for i, (_, held_out) in enumerate(splitter.split(np.zeros(len(groups)), strata, groups)):
            if i == which:
                mask = np.zeros(len(groups), dtype=bool)
                mask[held_out] = True
                return mask
    raise AssertionError("unreachable: fold index checked above")


STUDY_REDUCED_KEEP = 866 / 1736  # the study's "reduced anomalous" test kept 866 of 1736


def assign_anomaly_splits(
    groups: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    test_set: str = "patients",
    test_fraction: float = 0.2,
    val_fraction: float = 0.25,
) -> np.ndarray:
    """Splits for detectors trained on normals only (labels: 1 = anomalous); patients disjoint.

    "patients": a patient-grouped split stratified by label; the training split keeps its
    normals, its patients' anomalous images are "unused" (never moved to test).
    "study-imbalanced": the study's composition, anomalous-heavy test: patients with only
    normal images are split as usual; patients with any anomalous image never train and go
    to validation (val_fraction) or test (the rest), so nearly all anomalous images are tested.
    "study-reduced": as study-imbalanced with the anomalous test images subsampled to the
    study's 866/1736.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    if test_set == "patients":
        split = assign_splits(groups, labels, seed=seed, test_fraction=test_fraction,
                              val_fraction=val_fraction)
        return np.where((split == TRAIN) & (labels == 1), "unused", split)
    if test_set not in ("study-imbalanced", "study-reduced"):
        raise ValueError(f"unknown anomaly test set '{test_set}'")
    anomalous_patients = np.unique(groups[labels == 1])
    has_anomaly = np.isin(groups, anomalous_patients)
    split = np.empty(len(groups), dtype=object)
    normal_only = np.flatnonzero(~has_anomaly)
    split[normal_only] = assign_splits(groups[normal_only], labels[normal_only], seed=seed,
                                       test_fraction=test_fraction, val_fraction=val_fraction)
    affected = np.flatnonzero(has_anomaly)
    in_val = _fold_mask(groups[affected], labels[affected], n_splits=_n_splits(val_fraction),
                        which=0, seed=seed + 2)
    split[affected] = np.where(in_val, VAL, TEST)
    if test_set == "study-reduced":
        tested = np.flatnonzero((split == TEST) & (labels == 1))
        rng = np.random.default_rng(seed)
        dropped = rng.choice(tested, size=round(len(tested) * (1 - STUDY_REDUCED_KEEP)),
                             replace=False)
        split[dropped] = "unused"
    return split
