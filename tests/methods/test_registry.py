"""The method registry: every model of the matrix has one method, and fit checks name things."""

import pytest

from jaxfundus.config import ConfigError, load_task, task_names
from jaxfundus.methods import check_fits, method_class, model_names
from jaxfundus.models.registry import CLASSIFIERS


def test_every_model_of_the_matrix_has_a_method_serving_its_task_kind():
    for name in task_names():
        spec = load_task(name)
        for model in spec.models:
            assert spec.kind in method_class(model).kinds, (name, model)
    assert set(CLASSIFIERS) | {"ganomaly", "vae"} <= set(model_names())


def test_supervised_tasks_accept_any_classifier():
    check_fits(load_task("five-rare"), "resnet18")
    check_fits(load_task("ten-class"), "inception-v3")


@pytest.mark.parametrize(("task", "model", "message"), [
    ("five-rare", "vgg16", "model 'vgg16' does not fit task 'five-rare'.*resnet18"),
    ("ganomaly", "resnet18", "model 'resnet18' does not fit task 'ganomaly'.*vae"),
    ("vae", "ganomaly-xl", "does not fit"),
])
def test_models_that_do_not_fit_fail_with_a_message_naming_them(task, model, message):
    with pytest.raises(ConfigError, match=message):
        check_fits(load_task(task), model)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'vgg16'; choose from: .*simple-cnn"):
        method_class("vgg16")
