"""The sections of the report page, in order: each is a small function ReportData -> HTML.

A new section is a function in one of these modules and a line in SECTIONS (as big_vision lists
its evaluators); nothing else in the report changes.

    overview.py  data and settings, the summary table
    study.py     the study's figures redone: curves, folds, per disease, ROC, confusion,
                 reconstructions, EDA
    clinical.py  calibration, operating points, saliency maps, model comparisons
    anomaly.py   the anomaly detectors' image scores, localisation and per-disease AUROC
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jaxfundus.report.load import ReportData
from jaxfundus.report.sections import anomaly, clinical, overview, study


@dataclasses.dataclass(frozen=True)
class Section:
    id: str  # the HTML anchor
    title: str
    render: Callable[[ReportData], str]


SECTIONS = [
    Section("data", "Data and settings", overview.provenance),
    Section("summary", "Summary table", overview.summary),
    Section("curves", "Training curves (study Figs 7, 8, 11)", study.curves),
    Section("cv", "Cross-validation folds (study Figs 9, 10, 13)", study.cross_validation),
    Section("per-disease", "Normal vs each disease (study Fig 12)", study.per_disease),
    Section("roc", "ROC curves (study Fig 5)", study.roc),
    Section("confusion", "Confusion matrices", study.confusion),
    Section("calibration", "Calibration: reliability diagrams", clinical.calibration),
    Section("operating-points", "Operating points at 90% and 95% specificity",
            clinical.operating_points),
    Section("saliency", "Where the classifiers looked (Grad-CAM)", clinical.saliency),
    Section("comparisons", "Comparing models on the same test images", clinical.comparisons),
    Section("anomaly", "Anomaly detectors: image score, localisation, held-out lesions",
            anomaly.detectors),
    Section("reconstructions", "Anomaly-detector reconstructions (study Fig 6)",
            study.reconstructions),
    Section("eda", "Exploratory data analysis (study Figs 1-3)", study.eda),
]
