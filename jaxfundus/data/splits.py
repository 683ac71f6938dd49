"""Patient-grouped, class-stratified, seeded train/val/test assignment (holdout and k-fold).

The study split images; one patient's eyes and visits then sat on both sides. Here every
image of a patient lands in the same split of a run.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

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
        test_mask = _fold_mask(groups, strata, n_splits=_n_splits(test_fraction), which=0, seed=seed)
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
        raise ValueError(f"{n_groups} patients cannot be split into {n_splits} patient groups")
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
