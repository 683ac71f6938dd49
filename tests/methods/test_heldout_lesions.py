"""The held-out-lesion evaluation's split: on the generator's data, test keeps normals and images
of only held-out diseases and validation none of them (or only the validation diseases); on real
photographs every image counts."""

import dataclasses

import numpy as np
import pytest

from jaxfundus.config import ConfigError, load_task, resolve_config
from jaxfundus.data.datasets import open_dataset
from jaxfundus.data.labels import DISEASES
from jaxfundus.experiment import plan_folds
from jaxfundus.methods import make_method
from jaxfundus.methods.kinds import (
    disease_matrix,
    evaluated_heldout,
    evaluated_validation,
    kind_of,
)

HELDOUT = ("AMD", "RVO", "Gla", "MH", "AO")


@pytest.fixture(scope="module")
def dataset(tiny_data):
    return open_dataset(tiny_data.data_dir, 32, log=lambda _: None)


def _fold(dataset, heldout, validation=None):
    config = resolve_config("draem", "draem", "smoke", data_dir=str(dataset.data_dir),
                            heldout_diseases=heldout, validation_diseases=validation)
    [fold] = plan_folds(load_task("draem"), config, dataset)
    return config, fold


def test_the_draem_task_holds_out_the_rare_diseases_by_default(dataset):
    config, _ = _fold(dataset, None)
    assert config.heldout_diseases == ",".join(HELDOUT)
    assert config.validation_diseases == ",".join(HELDOUT)
    assert evaluated_heldout(config, dataset) == HELDOUT
    assert evaluated_validation(config, dataset) == HELDOUT
    assert kind_of(load_task("draem")).split_notes(config, dataset) == [
        "held-out lesions: AMD, RVO, Gla, MH, AO (never trained on); test: normals and images "
        "of only these diseases", "validation lesions: AMD, RVO, Gla, MH, AO (never trained "
        "on); validation: normals and images of only these diseases"]


def test_test_holds_only_heldout_diseases_and_validation_none(dataset):
    _, everything = _fold(dataset, "none", "none")
    _, heldout = _fold(dataset, ",".join(HELDOUT), "none")
    diseases = disease_matrix(heldout.examples.frame, dataset.index)
    columns = [DISEASES.index(d) for d in HELDOUT]
    has_heldout = diseases[:, columns].any(1)
    has_seen = np.delete(diseases, columns, axis=1).any(1)
    normal = diseases.sum(1) == 0
    test, val = heldout.split == "test", heldout.split == "val"
    assert (has_heldout[test] | normal[test]).all() and not has_seen[test].any()
    assert not has_heldout[val].any() and has_seen[val].any() and normal[val].any()
    assert has_heldout[test].any()
    # Only anomalous test/val images are set aside: training and the normals are unchanged.
    changed = heldout.split != everything.split
    assert (heldout.split[changed] == "unused").all() and not normal[changed].any()
    assert np.array_equal(heldout.split == "train", everything.split == "train")
    # What stays in test is exactly the held-out-only images of the ordinary test split.
    expected = (everything.split == "test") & (normal | ~has_seen)
    assert np.array_equal(test, expected)


def test_on_real_photographs_every_test_image_counts(dataset):
    real = dataclasses.replace(dataset, masks_dir=None)  # no generator summary beside it
    config, fold = _fold(real, ",".join(HELDOUT))
    _, everything = _fold(real, "none")
    assert evaluated_heldout(config, real) == ()
    assert np.array_equal(fold.split, everything.split)
    [note] = kind_of(load_task("draem")).split_notes(config, real)
    assert "not the generator's" in note and "every test and validation image counts" in note
    # The default names the held-out diseases for validation too: each is listed once.
    assert note.startswith("held-out lesions AMD, RVO, Gla, MH, AO: ")
    config, fold = _fold(real, ",".join(HELDOUT), "DR,DM")
    assert evaluated_validation(config, real) == ()
    assert np.array_equal(fold.split, everything.split)


def test_validation_diseases_make_up_validation_and_are_never_trained_on(dataset):
    _, heldout = _fold(dataset, ",".join(HELDOUT), "none")
    config, fold = _fold(dataset, ",".join(HELDOUT), "DM,DR")
    assert evaluated_validation(config, dataset) == ("DR", "DM")
    diseases = disease_matrix(fold.examples.frame, dataset.index)
    others = np.delete(diseases, [DISEASES.index("DR"), DISEASES.index("DM")], axis=1).any(1)
    val = fold.split == "val"
    assert not others[val].any() and diseases[val].any() and (diseases[val].sum(1) == 0).any()
    # Test and training are those of the held-out split; only validation lost images.
    assert np.array_equal(fold.split == "test", heldout.split == "test")
    assert np.array_equal(fold.split == "train", heldout.split == "train")
    assert (fold.split[fold.split != heldout.split] == "unused").all()
    assert kind_of(load_task("draem")).split_notes(config, dataset)[1] == (
        "validation lesions: DR, DM (never trained on); validation: normals and images of only "
        "these diseases")
    method = make_method(load_task("draem"), config)
    assert method.lesion_diseases == ("RD", "RP")


def test_validation_may_hold_the_heldout_diseases_of_other_patients(dataset):
    _, heldout = _fold(dataset, ",".join(HELDOUT), "none")
    config, fold = _fold(dataset, ",".join(HELDOUT), ",".join(HELDOUT))
    diseases = disease_matrix(fold.examples.frame, dataset.index)
    columns = [DISEASES.index(d) for d in HELDOUT]
    has_seen = np.delete(diseases, columns, axis=1).any(1)
    val, test = fold.split == "val", fold.split == "test"
    # Validation: normals and images of only held-out diseases, as the test, from other patients.
    assert diseases[val][:, columns].any() and (diseases[val].sum(1) == 0).any()
    assert not has_seen[val].any()
    patients = fold.examples.frame["patient_id"].to_numpy()
    assert not set(patients[val]) & set(patients[test])
    # Test and training are those of the held-out split; the stamps trained on are unchanged.
    assert np.array_equal(test, heldout.split == "test")
    assert np.array_equal(fold.split == "train", heldout.split == "train")
    method = make_method(load_task("draem"), config)
    assert method.lesion_diseases == ("DR", "RD", "RP", "DM")


def test_a_misspelt_disease_is_refused_naming_it(dataset):
    with pytest.raises(ConfigError, match="heldout_diseases: 'AMDX' is not a disease"):
        _fold(dataset, "AMD,AMDX")
