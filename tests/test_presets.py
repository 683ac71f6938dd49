"""Presets train the models the task lists, and `workers = -1` picks the input processes."""

import math

import pytest

from jaxfundus import commands
from jaxfundus.config import (
    ACCELERATOR_IMAGES_PER_S,
    AUTO_WORKERS,
    WORKER_IMAGES_PER_S,
    ConfigError,
    input_workers,
    load_task,
    preset_names,
    resolve_config,
)
from jaxfundus.methods import check_fits


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_trains_the_model_the_task_lists(preset):
    assert commands.matrix("five-rare", None, all_tasks=False) == [("five-rare", "resnet50")]
    assert resolve_config("five-rare", None, preset).model == "resnet50"


def test_resnet18_stays_a_model_a_user_can_ask_for():
    assert commands.matrix("five-rare", "resnet18", all_tasks=False) == [("five-rare", "resnet18")]
    check_fits(load_task("five-rare"), "resnet18")
    assert resolve_config("five-rare", "resnet18", "cpu").model == "resnet18"


def test_auto_workers_keep_a_core_for_the_steps_and_stop_at_what_the_accelerator_needs():
    needed = math.ceil(ACCELERATOR_IMAGES_PER_S / WORKER_IMAGES_PER_S)
    assert 1 < needed < 16
    assert input_workers(AUTO_WORKERS, cores=1) == 0  # only the step's core: in-process
    assert input_workers(AUTO_WORKERS, cores=2) == 1
    assert input_workers(AUTO_WORKERS, cores=needed + 1) == needed
    assert input_workers(AUTO_WORKERS, cores=128) == needed
    assert input_workers(AUTO_WORKERS) >= 0  # this machine's cores
    assert input_workers(3, cores=2) == 3  # an explicit count is kept
    assert input_workers(0, cores=64) == 0


def test_paper_preset_asks_for_auto_workers_and_lower_counts_are_refused():
    assert resolve_config("five-rare", None, "paper").workers == AUTO_WORKERS
    assert resolve_config("five-rare", None, "cpu").workers == 0
    with pytest.raises(ConfigError, match=r"workers = -2: expected a value >= -1"):
        resolve_config("five-rare", None, "cpu", workers=-2)
