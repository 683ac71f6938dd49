import dataclasses
import re

import pytest

from jaxfundus.config import (
    ConfigError,
    RunConfig,
    check_value,
    expand_task,
    load_task,
    parse_settings,
    resolve_config,
    settable_fields,
    task_names,
)


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


def test_settings_are_typed_from_the_run_config_fields():
    settings = parse_settings(["epochs=3", "learning_rate=1e-3", "augment=no", "seed=7",
                               "threshold=0.25", "balance=none", "data-dir=/data/top=v2"])
    assert settings == {"epochs": 3, "learning_rate": 0.001, "augment": False, "seed": 7,
                        "threshold": 0.25, "balance": "none", "data_dir": "/data/top=v2"}
    assert type(settings["learning_rate"]) is float and type(settings["epochs"]) is int
    assert parse_settings(["threshold=none", "data_dir=None"]) == {"threshold": None,
                                                                     "data_dir": None}


@pytest.mark.parametrize(("word", "value"), [
    ("true", True), ("1", True), ("yes", True), ("YES", True),
    ("false", False), ("0", False), ("no", False), ("False", False),
])
def test_bool_settings_accept_the_usual_words(word, value):
    assert parse_settings([f"augment={word}"]) == {"augment": value}


def test_every_run_config_field_but_the_selectors_can_be_set():
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(settable_fields()) == fields - {"task", "model", "preset"}


def test_settings_reach_the_resolved_config():
    config = resolve_config("five-rare", None, "cpu",
                            **parse_settings(["epochs=2", "augment=false", "dtype=bfloat16",
                                              "threshold_criterion=youden"]))
    assert (config.epochs, config.augment, config.dtype, config.threshold_criterion) == (
        2, False, "bfloat16", "youden")
    assert config.image_size == 64  # the preset's value where nothing was set


@pytest.mark.parametrize(("assignment", "message"), [
    ("epochs=three", "epochs = 'three': expected an integer"),
    ("epochs=2.5", "epochs = '2.5': expected an integer"),
    ("learning_rate=fast", "learning_rate = 'fast': expected a number"),
    ("augment=maybe", "augment = 'maybe': expected true or false"),
    ("threshold=high", "threshold = 'high': expected a number or none"),
    ("epochs", "--set 'epochs': expected key=value"),
    ("model=resnet18", "--set model=...: the model is chosen with --model"),
])
def test_badly_typed_settings_name_key_value_and_type(assignment, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        parse_settings([assignment])


def test_an_unknown_setting_is_one_line_listing_the_valid_keys():
    with pytest.raises(ConfigError) as error:
        parse_settings(["epoch=3"])
    message = str(error.value)
    assert "\n" not in message and message.startswith("unknown option 'epoch'; valid keys: ")
    assert message.split("valid keys: ")[1].split(", ") == list(settable_fields())


def test_a_setting_given_twice_is_refused():
    with pytest.raises(ConfigError, match=r"'epochs' is given twice \(epochs=3 and epochs=4\)"):
        parse_settings(["epochs=3", "epochs=4"])


def test_settings_can_be_limited_to_some_keys():
    assert parse_settings(["threshold=0.5"], allowed=("threshold",)) == {"threshold": 0.5}
    with pytest.raises(ConfigError, match="unknown option 'epochs'; valid keys: threshold$"):
        parse_settings(["epochs=3"], allowed=("threshold",))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"epochs": 0}, "epochs = 0: expected a value >= 1"),
    ({"image_size": 8}, "image_size = 8: expected a value >= 16"),
    ({"test_fraction": 1.5}, "test_fraction = 1.5: expected a fraction between 0 and 1"),
    ({"learning_rate": 0.0}, "learning_rate = 0.0: expected a value > 0"),
    ({"dtype": "int8"}, "dtype = 'int8': expected one of float32, bfloat16"),
    ({"image_size": 64.0}, "image_size = 64.0: expected an integer"),
    ({"augment": 1}, "augment = 1: expected true or false"),
    ({"epoch": 3}, "unknown option 'epoch'; valid keys: image_size, "),
])
def test_values_from_python_are_checked_like_settings(overrides, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        resolve_config("five-rare", None, "cpu", **overrides)


def test_a_whole_number_is_a_valid_float():
    assert resolve_config("five-rare", None, "cpu", learning_rate=1).learning_rate == 1.0
    assert type(resolve_config("five-rare", None, "cpu", learning_rate=1).learning_rate) is float


def test_a_value_from_a_file_names_where_it_came_from():
    """resolve_config checks each preset value this way, with its table as the location."""
    with pytest.raises(ConfigError, match=r"^presets.toml \[cpu\]: epochs = '15': expected an "
                                          r"integer$"):
        check_value("epochs", "15", "presets.toml [cpu]")


def test_a_task_file_sets_run_settings_that_the_command_line_overrides():
    assert load_task("draem").settings["heldout_diseases"] == "AMD,RVO,Gla,MH,AO"
    config = resolve_config("draem", None, "cpu")
    assert (config.image_score, config.image_score_sigma, config.heldout_diseases) == (
        "max", 1.0, "AMD,RVO,Gla,MH,AO")
    assert config.image_size == 64  # the preset still sizes the run
    overridden = resolve_config("draem", None, "cpu", **parse_settings(
        ["image_score=top-k", "image_score_sigma=2", "heldout_diseases=none"]))
    assert (overridden.image_score, overridden.image_score_sigma, overridden.heldout_diseases) == (
        "top-k", 2.0, "none")
    # A task without settings keeps the field defaults.
    assert resolve_config("binary", None, "cpu").image_score == "mean"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"image_score": "median"}, "image_score = 'median': expected one of mean, max, top-k, "
                                "latent"),
    ({"image_score_k": 0.0}, "image_score_k = 0.0: expected a percentage in (0, 100]"),
    ({"anomaly_probability": 1.5}, "anomaly_probability = 1.5: expected a probability"),
    ({"texture_probability": 0.7, "structure_probability": 0.4},
     "texture_probability + structure_probability = 0.7 + 0.4: expected at most 1"),
    ({"image_score_sigma": -1.0}, "image_score_sigma = -1.0: expected a value >= 0"),
])
def test_anomaly_settings_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        resolve_config("vae", None, "cpu", **overrides)
