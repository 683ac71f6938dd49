"""Plans the synthetic cohort: patients, exams, eyes and their labels (no pixels are drawn here).

The counts follow the real TOP dataset (13,047 images of 5,389 patients), scaled down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from jaxfundus.data.labels import DISEASES

# Real TOP image counts per exact label set: every single-label set, DR+DM, and normal (()).
REAL_GROUPS: dict[tuple[str, ...], int] = {
    (): 4364,
    ("Gla",): 2293,
    ("DR", "DM"): 3113,
    ("RD",): 883,
    ("DM",): 530,
    ("RVO",): 537,
    ("AMD",): 375,
    ("RP",): 247,
    ("MH",): 161,
    ("AO",): 11,
    ("DR",): 3,
}
# Mixed label sets (529 images, 2.33 labels each) that make up the rest of each label's real
# total: AMD 413, RVO 778, Gla 2619, MH 222, DR 3323, RD 974, RP 258, AO 21, DM 3895.
REAL_MIXES: dict[tuple[str, ...], int] = {
    ("Gla", "DR", "DM"): 110,
    ("RVO", "DR", "DM"): 45,
    ("DR", "RD", "DM"): 12,
    ("RVO", "Gla", "DM"): 10,
    ("Gla", "DR"): 25,
    ("RVO", "DR"): 15,
    ("RVO", "DM"): 50,
    ("Gla", "DM"): 25,
    ("RVO", "Gla"): 78,
    ("RVO", "RD"): 25,
    ("MH", "RD"): 30,
    ("Gla", "RD"): 24,
    ("Gla", "MH"): 21,
    ("AMD", "MH"): 10,
    ("AMD", "Gla"): 18,
    ("AMD", "RVO"): 10,
    ("Gla", "RP"): 11,
    ("RVO", "AO"): 6,
    ("Gla", "AO"): 4,
}
# Diseases that usually affect both eyes; the fellow eye of any other disease is mostly normal.
BILATERAL = frozenset({"DR", "DM", "RP", "AMD", "Gla"})
# Years added to (or taken from) a patient's age by their diseases (RP and RD strike younger).
AGE_SHIFT = {"RP": -18.0, "RD": -8.0, "AMD": 7.0, "AO": 3.0, "MH": 2.0}

VISITS = (1, 2, 3, 4)
VISIT_PROBS = (0.6, 0.25, 0.1, 0.05)
P_BOTH_EYES = 0.5
P_BILATERAL_SAME = 0.75
P_UNILATERAL_SAME = 0.1
P_MALE = 0.55
MAX_PATIENTS = 99_999  # five-digit patient IDs
MAX_EXAMS = 1_000_000  # six-digit exam numbers


@dataclass(frozen=True)
class ImageSpec:
    """One row of data.csv plus the keys that seed its pixels."""

    index: int  # row in data.csv; seeds the per-image RNG
    filename: str  # "NNNNNN_MM.jpg": exam number and index within the exam
    patient_id: str  # five digits, zero-padded
    patient_key: int  # position of the patient in the plan; seeds the patient's appearance
    eye: str  # "L" or "R"
    age: int
    sex: str  # "M" or "F"
    labels: tuple[str, ...]  # diseases in DISEASES order; () for a normal eye


def canonical(labels: Iterable[str]) -> tuple[str, ...]:
    """Sorts disease names into DISEASES order, rejecting unknown names."""
    labels = set(labels)
    unknown = labels.difference(DISEASES)
    if unknown:
        raise ValueError(f"unknown disease label(s) {sorted(unknown)}; expected some of {DISEASES}")
    return tuple(d for d in DISEASES if d in labels)


def group_sizes(scale: float, min_images_per_class: int) -> dict[tuple[str, ...], int]:
    """Images per label set: real counts times `scale`, single-label groups floored."""
    sizes = {
        canonical(g): max(int(n * scale + 0.5), min_images_per_class)
        for g, n in REAL_GROUPS.items()
    }
    for g, n in REAL_MIXES.items():
        if int(n * scale + 0.5):
            sizes[canonical(g)] = int(n * scale + 0.5)
    return sizes


def _fellow_labels(labels, remaining, rng) -> tuple[str, ...] | None:
    """Labels of the other eye of a patient whose first eye has `labels`, or None if not imaged."""
    p_same = P_BILATERAL_SAME if labels and BILATERAL.issuperset(labels) else P_UNILATERAL_SAME
    candidates = [labels, ()] if rng.random() < p_same else [(), labels]
    for c in candidates:
        if remaining.get(c, 0) > 0:
            return c
    return None


def _label_set_key(labels: tuple[str, ...]) -> tuple[int, ...]:
    """Sort key putting label sets in a stable DISEASES-based order."""
    return tuple(DISEASES.index(d) for d in labels)


def _allocate_patients(sizes, rng) -> list[list[tuple[str, tuple[str, ...], int]]]:
    """Splits the label-set pool into patients, each [(eye, labels, images of that eye)]; an
    eye with n images is photographed at the patient's first n visits."""
    remaining = dict(sizes)
    diseased = sorted((g for g in remaining if g), key=_label_set_key)
    patients = []
    while True:
        weights = np.array([remaining[g] for g in diseased], float)
        if weights.sum() > 0:
            labels = diseased[rng.choice(len(diseased), p=weights / weights.sum())]
        elif remaining.get((), 0) > 0:
            labels = ()
        else:
            return patients
        visits = int(rng.choice(VISITS, p=VISIT_PROBS))
        first_eye = "R" if rng.random() < 0.5 else "L"
        record = [(first_eye, labels, min(visits, remaining[labels]))]
        remaining[labels] -= record[0][2]
        if rng.random() < P_BOTH_EYES:
            fellow = _fellow_labels(labels, remaining, rng)
            if fellow is not None:
                other_eye = "L" if first_eye == "R" else "R"
                record.append((other_eye, fellow, min(visits, remaining[fellow])))
                remaining[fellow] -= record[1][2]
        patients.append(record)


def _sample_age(labels: set[str], rng) -> float:
    """Age at the first visit: left-skewed (mean ~65, median ~67), shifted by disease."""
    age = 88.5 - rng.gamma(3.8, 6.0) + sum(AGE_SHIFT.get(d, 0.0) for d in labels)
    return float(np.clip(age, 18, 95))


def plan_cohort(scale: float, min_images_per_class: int, seed: int) -> list[ImageSpec]:
    """Plans every image of the cohort, sorted by filename (which is also `index` order)."""
    rng = np.random.default_rng([seed, 0])  # stream 0; generator.py seeds the pixels with 1-4
    patients = _allocate_patients(group_sizes(scale, min_images_per_class), rng)
    n_exams = sum(max(n for _, _, n in record) for record in patients)
    if len(patients) > MAX_PATIENTS or n_exams > MAX_EXAMS:
        raise ValueError(
            f"scale={scale} plans {len(patients)} patients and {n_exams} exams; five-digit IDs "
            f"and six-digit exam numbers allow at most {MAX_PATIENTS} and {MAX_EXAMS}"
        )
    patient_ids = rng.choice(MAX_PATIENTS, len(patients), replace=False) + 1
    exam_numbers = rng.choice(MAX_EXAMS, n_exams, replace=False)
    rows = []
    next_exam = 0
    for key, record in enumerate(patients):
        n_visits = max(n for _, _, n in record)
        # A patient's exams are numbered in visit order, as a clinic's counter would.
        exams = np.sort(exam_numbers[next_exam : next_exam + n_visits])
        next_exam += n_visits
        all_labels = {d for _, labels, _ in record for d in labels}
        age = _sample_age(all_labels, rng)
        years_between_visits = rng.uniform(0.2, 1.5)
        sex = "M" if rng.random() < P_MALE else "F"
        for visit, exam in enumerate(exams):
            imaged = [(eye, labels) for eye, labels, n in sorted(record) if n > visit]
            # Right eye first, as clinics photograph it: sorted() puts "L" first, so reverse.
            for image_in_exam, (eye, labels) in enumerate(reversed(imaged)):
                rows.append(
                    (
                        f"{exam:06d}_{image_in_exam:02d}.jpg",
                        f"{patient_ids[key]:05d}",
                        key,
                        eye,
                        int(age + visit * years_between_visits),
                        sex,
                        labels,
                    )
                )
    rows.sort()
    return [ImageSpec(i, *row) for i, row in enumerate(rows)]
