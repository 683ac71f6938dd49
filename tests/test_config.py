import pytest

from jaxfundus.config import ConfigError, expand_task, load_task, resolve_config, task_names


def test_matrix_holds_every_study_row():
    names = set(task_names())
    assert {"binary", "three-class", "ten-class", "five-rare", "ganomaly", "vae"} <= names
    assert {f"normal-vs-{d}" for d in ("amd", "rvo", "mh", "rd", "rp", "ao")} <= names
    assert load_task("binary").models == ("simple-cnn", "inception-v3", "resnet50")
    assert load_task("three-class").cv_folds == 4
    assert load_task("ten-class").kind == "multi-label"


def test_group_expands_to_six_tasks():
    assert expand_task("rare-vs-normal") == [
        "normal-vs-amd", "normal-vs-rvo", "normal-vs-mh", "normal-vs-rd", "normal-vs-rp",
        "normal-vs-ao"]


def test_preset_model_override_and_explicit_override():
    paper_cnn = resolve_config("binary", "simple-cnn", "paper")
    assert (paper_cnn.image_size, paper_cnn.batch_size) == (1024, 16)
    paper_resnet = resolve_config("binary", "resnet50", "paper")
    assert (paper_resnet.image_size, paper_resnet.batch_size) == (256, 32)
    config = resolve_config("five-rare", None, "cpu", epochs=3, image_size=None)
    assert config.model == "resnet50" and config.epochs == 3 and config.image_size == 64


@pytest.mark.parametrize(("call", "message"), [
    (lambda: load_task("nine-class"), "unknown task 'nine-class'"),
    (lambda: resolve_config("five-rare", None, "huge"), "unknown preset 'huge'"),
    (lambda: resolve_config("five-rare", None, "cpu", balance="oversample"), "balance"),
])
def test_bad_names_fail_with_a_message_naming_them(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
