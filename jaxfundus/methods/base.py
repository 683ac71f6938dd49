"""What every method provides, and the pieces methods share.

A method trains one kind of model through the one loop (`jaxfundus.train.loop`: steps, state,
validation metrics) and also says how a trained fold is scored on its test split and what the
outputs mean; experiment.py, predict.py and the report never ask which model it is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from flax import nnx

from jaxfundus.data.datasets import Dataset
from jaxfundus.data.selection import TaskExamples
from jaxfundus.methods.kinds import Kind
from jaxfundus.train import loop
from jaxfundus.train.loop import SplitData, Trainer


@dataclasses.dataclass(frozen=True)
class FoldData:
    """The images of one fold of a task, their split assignment and the data they come from."""

    fold: int
    kind: Kind
    examples: TaskExamples
    split: np.ndarray  # 'train' / 'val' / 'test' / 'unused' per row of examples.frame
    dataset: Dataset

    def frame(self, name: str) -> pd.DataFrame:
        return self.examples.frame[self.split == name]

    def data(self, name: str) -> SplitData:
        """One split as the loop's SplitData (targets as the kind defines them)."""
        frame = self.frame(name)
        return SplitData(self.dataset.source, frame["index"].to_numpy(),
                         self.kind.targets(frame, self.examples))


class Method(loop.Method, Protocol):
    """A loop method plus its identity and how a trained fold is scored."""

    models: ClassVar[tuple[str, ...]]  # model names this method trains
    kinds: ClassVar[tuple[str, ...]]  # task kinds it serves
    default_task: ClassVar[str]  # the task `invoke bench` uses for its models

    def __init__(self, spec, config, steps_per_epoch: int) -> None: ...

    def score_fold(self, trainer: Trainer, state: Any, fold: FoldData, directory: Path,
                   write_files: bool) -> tuple[pd.DataFrame, dict]:
        """Score `state` on the fold's test split -> (predictions.csv rows, metrics.json dict);
        with `write_files`, also write the method's pictures into `directory`."""
        ...


def graphdefs(build) -> tuple[nnx.GraphDef, nnx.GraphDef]:
    """(train-mode graphdef, eval-mode graphdef) of the module `build()` makes, no weights."""
    return graphdefs_of(nnx.eval_shape(build))


def graphdefs_of(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.GraphDef]:
    """(train-mode graphdef, eval-mode graphdef) of `model` (abstract or not; left in eval
    mode), for a caller that needs the model for more than these two graphs."""
    model.train()
    train_graph = nnx.split(model, nnx.Param, ...)[0]
    model.eval()
    return train_graph, nnx.split(model, nnx.Param, ...)[0]


def split_variables(module: nnx.Module) -> tuple[nnx.State, nnx.State]:
    """(Params, everything else: batch statistics, rng counters) of a module."""
    _, params, rest = nnx.split(module, nnx.Param, ...)
    return params, rest
