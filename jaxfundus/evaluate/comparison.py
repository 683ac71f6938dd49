"""Two models of one task on the same test images: the paired difference in AUROC.

With one positive class (binary tasks: the second class's probability; anomaly tasks: the
score) the difference gets a paired patient-bootstrap interval and DeLong's p-value. With
several classes the headline is the macro AUROC, an average of per-class AUROCs that has no
DeLong variance: it gets the paired bootstrap interval only. Cross-validated runs are compared
on their pooled out-of-fold predictions (each image tested once). Nothing here imports jax.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from jaxfundus.evaluate import intervals as iv
from jaxfundus.runs import Run, pooled_predictions, run_seed

# A ROC family as a task kind defines it: (name, truth column, its positive value, score column).
RocTarget = tuple[str, str, Any, str]
MACRO_NOTE = ("macro AUROC averages per-class AUROCs and has no DeLong variance: paired "
              "patient bootstrap only, no p-value")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """AUROC of model a minus model b on the same images; p_value None for macro AUROC."""

    task: str
    model_a: str
    model_b: str
    metric: str  # "auroc" (one positive class) or "macro_auroc"
    positive: str  # what the AUROC ranks: the positive class, or "one-vs-rest per class"
    n_images: int
    n_patients: int
    auroc_a: float
    auroc_b: float
    difference: float
    difference_ci: list[float] | None
    p_value: float | None
    note: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        interval = ("[undefined]" if self.difference_ci is None else
                    f"[{self.difference_ci[0]:+.3f}, {self.difference_ci[1]:+.3f}]")
        test = (f"DeLong p = {self.p_value:.3g}" if self.p_value is not None
                else "no p-value (macro AUROC)")
        return (f"{self.task}: {self.model_a} vs {self.model_b}, {self.metric} "
                f"{self.auroc_a:.3f} vs {self.auroc_b:.3f}; difference {self.difference:+.3f} "
                f"{interval} (95% paired patient bootstrap), {test}; {self.n_images} images of "
                f"{self.n_patients} patients")


def compare_predictions(task: str, model_a: str, model_b: str, a: pd.DataFrame,
                        b: pd.DataFrame, targets: Sequence[RocTarget], *, seed: int = 0,
                        n_resamples: int = iv.DEFAULT_RESAMPLES) -> Comparison:
    """Compare two predictions tables (predictions.csv rows) of the same test images.

    Raises ValueError naming the problem when the tables hold different images or labels.
    """
    only_a = sorted(set(a["filename"]) - set(b["filename"]))
    only_b = sorted(set(b["filename"]) - set(a["filename"]))
    if only_a or only_b or len(a) != len(b):
        examples = [f"{only_a[0]} only in {model_a}'s"] if only_a else []
        examples += [f"{only_b[0]} only in {model_b}'s"] if only_b else []
        raise ValueError(f"{task}: {model_a} and {model_b} were not tested on the same images "
                         f"({len(a)} vs {len(b)} rows; "
                         f"{'; '.join(examples) or 'a filename repeated'}); compare runs "
                         "trained with the same data and seed")
    paired = a.merge(b, on="filename", suffixes=("_a", "_b"), validate="one_to_one")
    truth = np.column_stack([(paired[f"{column}_a"] == positive).to_numpy()
                             for _, column, positive, _ in targets])
    truth_b = np.column_stack([(paired[f"{column}_b"] == positive).to_numpy()
                               for _, column, positive, _ in targets])
    if not np.array_equal(truth, truth_b):
        row = int(np.flatnonzero((truth != truth_b).any(axis=1))[0])
        raise ValueError(f"{task}: {paired['filename'][row]} has different labels in "
                         f"{model_a}'s and {model_b}'s predictions.csv")
    scores = [np.column_stack([paired[f"{score}_{side}"].to_numpy(np.float64)
                               for *_, score in targets]) for side in ("a", "b")]
    patients = paired["patient_id_a"].astype(str).to_numpy()
    common = dict(task=task, model_a=model_a, model_b=model_b, n_images=len(paired),
                  n_patients=len(set(patients)))
    if len(targets) == 1:
        result = iv.compare_aurocs(truth[:, 0].astype(int), scores[0][:, 0], scores[1][:, 0],
                                   patients, n_resamples=n_resamples, seed=seed)
        return Comparison(metric="auroc", positive=targets[0][0], auroc_a=result.auroc_a,
                          auroc_b=result.auroc_b, difference=result.difference.estimate,
                          difference_ci=result.difference.to_json(), p_value=result.p_value,
                          **common)
    labels = truth.astype(int)
    macro_a, macro_b = (iv.macro_auroc(labels, s) for s in scores)
    interval = iv.bootstrap({"difference": iv.difference(macro_a, macro_b)}, patients,
                            n_resamples=n_resamples, seed=seed)["difference"]
    ones = np.ones((1, len(paired)))
    return Comparison(metric="macro_auroc", positive="one-vs-rest per class",
                      auroc_a=float(macro_a(ones)[0]), auroc_b=float(macro_b(ones)[0]),
                      difference=interval.estimate, difference_ci=interval.to_json(),
                      p_value=None, note=MACRO_NOTE, **common)


def compare_runs(runs: Sequence[Run], targets: Sequence[RocTarget]) -> list[Comparison | str]:
    """Every pair of the trained runs of one task, in the order given: a Comparison, or a line
    saying why a pair cannot be compared (different test images, no predictions)."""
    found: list[Comparison | str] = []
    for run_a, run_b in itertools.combinations([r for r in runs if r.folds], 2):
        a, b = pooled_predictions(run_a.folds), pooled_predictions(run_b.folds)
        if a is None or b is None:
            found.append(f"{run_a.title} vs {run_b.model}: no predictions.csv to compare")
            continue
        try:
            found.append(compare_predictions(run_a.spec.name, run_a.model, run_b.model, a, b,
                                             targets, seed=run_seed(run_a.folds)))
        except ValueError as error:
            found.append(str(error))
    return found
