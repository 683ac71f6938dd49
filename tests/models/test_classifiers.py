"""Classifier zoo: shapes, parameter counts, mixed precision, BatchNorm modes, training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxfundus.models.registry import CLASSIFIERS, MODEL_NAMES, build_classifier
from jaxfundus.models.resnet import resnet18
from jaxfundus.models.simple_cnn import SimpleCNN

# Keras' include_top=False trainable counts; ResNet50 minus its 26,560 conv biases.
BACKBONE_PARAMS = {"resnet50": 23_534_592 - 26_560, "inception-v3": 21_768_352}
BACKBONE_WIDTH = {"simple-cnn": 128, "resnet18": 512, "resnet50": 2048, "inception-v3": 2048}


def count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def abstract_forward(model: nnx.Module, shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    """Trace the forward pass without compiling or running it."""
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s, copy=True)(x), state, images)


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation):
    """The training loop's pattern: plain jax.jit over split state, merge inside."""

    @jax.jit
    def train_step(params, rest, opt_state, images, labels):
        def loss_fn(params):
            # copy=True: the merged Variables must belong to this (grad) trace to be updated.
            model = nnx.merge(graphdef, params, rest, copy=True)
            logits = model(images)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, nnx.state(model, nnx.Not(nnx.Param))

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    return train_step


def rngs(seed: int = 0) -> nnx.Rngs:
    # 'rbg' keys: threefry initialisers compile for ~1 s per parameter shape on CPU.
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def jit_forward(model: nnx.Module):
    """Jitted ``state, images -> logits`` in the model's current train/eval mode."""
    graphdef, state = nnx.split(model)
    return state, jax.jit(lambda state, x: nnx.merge(graphdef, state, copy=True)(x))


def tiny_batch(height: int, width: int | None = None, batch: int = 8):
    """Noise images whose mean brightness gives the label, so a few steps can fit them."""
    rng = np.random.default_rng(0)  # numpy: jax.random would compile a sampler per shape
    labels = np.arange(batch) % 2
    noise = rng.normal(size=(batch, height, width or height, 3)).astype(np.float32)
    return jnp.asarray(noise + labels[:, None, None, None]), jnp.asarray(labels)


def test_registry_names_and_unknown_name():
    assert set(CLASSIFIERS) == {"simple-cnn", "resnet18", "resnet50", "inception-v3"}
    assert MODEL_NAMES[: len(CLASSIFIERS)] == list(CLASSIFIERS)
    with pytest.raises(ValueError, match="unknown model 'vgg16'; choose from: simple-cnn"):
        build_classifier("vgg16", 2, rngs=rngs())


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.slow] if name in BACKBONE_PARAMS else [])
    for name in sorted(CLASSIFIERS)])  # slow: tracing a full-size network takes seconds
def test_bfloat16_forward_shape_and_parameter_count(name):
    model = nnx.eval_shape(lambda: build_classifier(name, 3, rngs=nnx.Rngs(0), dtype=jnp.bfloat16))
    out = abstract_forward(model, (2, 32, 32, 3))
    assert (out.shape, out.dtype) == ((2, 3), jnp.float32)
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    features = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x), state, images)
    assert features.ndim == 4 and features.shape[::3] == (2, BACKBONE_WIDTH[name])
    assert features.dtype == jnp.bfloat16  # the compute dtype; classify pools in float32
    params = nnx.state(model, nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    if name in BACKBONE_PARAMS:
        assert count(params) == BACKBONE_PARAMS[name] + BACKBONE_WIDTH[name] * 3 + 3


@pytest.mark.slow  # traces the full Inception-v3
def test_inception_stem_keeps_keras_sizes_from_75_px():
    model = nnx.eval_shape(lambda: build_classifier("inception-v3", 1, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)

    def stem(state, x):
        padding = "VALID" if x.shape[1] >= 75 else "SAME"  # as InceptionV3.features
        return nnx.merge(graphdef, state, copy=True).stem(x, padding)

    for size, expected in [(299, 35), (75, 7), (32, 4)]:
        images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        assert jax.eval_shape(stem, state, images).shape == (1, expected, expected, 192)


# One model per classify/__call__ implementation: simple-cnn's own classify (dense, dropout)
# and layers.Classifier's, which resnet18, resnet50 and inception-v3 all inherit unchanged, so
# for them `model(x)` runs the very calls `classify(features(x))` does. Their feature widths
# are checked by test_bfloat16_forward_shape_and_parameter_count and their full graphs against
# Keras in tests/models/test_keras_weights.py; compiling resnet50 and inception-v3 here again
# took 12 s and 21 s.
CUT_MODELS = ["resnet18", "simple-cnn"]


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=[pytest.mark.slow] if name != "simple-cnn" else [])
     for name in CUT_MODELS],
)
def test_forward_pass_is_classify_of_features(name):
    """Grad-CAM and weight conversion cut the model at features/classify: the cut must lose
    nothing, in train mode too (BatchNorm statistics and dropout's rng advance the same)."""
    model = nnx.jit(lambda: build_classifier(name, 3, rngs=rngs()))()
    model.train()
    graphdef, state = nnx.split(model)

    @jax.jit
    def both_ways(state, images):
        whole = nnx.merge(graphdef, state, copy=True)
        split = nnx.merge(graphdef, state, copy=True)
        features = split.features(images)
        logits = split.classify(features)
        updated = nnx.Not(nnx.RngKey)  # the rest: parameters, BatchNorm statistics, rng counts
        return whole(images), nnx.state(whole, updated), logits, nnx.state(split, updated), features

    images, _ = tiny_batch(32, batch=4)
    whole_logits, whole_state, logits, split_state, features = both_ways(state, images)
    assert features.shape[::3] == (4, BACKBONE_WIDTH[name]) and features.ndim == 4
    assert (logits.shape, logits.dtype) == ((4, 3), jnp.float32)
    np.testing.assert_array_equal(whole_logits, logits)
    jax.tree.map(np.testing.assert_array_equal, whole_state, split_state)
    # The train step above changed the state, so the equality covered real updates.
    before = nnx.state(model, nnx.Not(nnx.RngKey))
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, before, whole_state)))


def test_models_not_run_for_the_cut_share_a_tested_cut():
    """What lets test_forward_pass_is_classify_of_features run one model per implementation."""
    def model_class(name):
        constructor = CLASSIFIERS[name]
        return getattr(constructor, "func", constructor)  # resnets are partials of ResNet

    tested = {(model_class(name).__call__, model_class(name).classify) for name in CUT_MODELS}
    for name in set(CLASSIFIERS) - set(CUT_MODELS):
        assert (model_class(name).__call__, model_class(name).classify) in tested, name


def test_resnet_variant_takes_in_channels():
    model = nnx.eval_shape(lambda: resnet18(2, rngs=nnx.Rngs(0), in_channels=1))
    assert model.stem.conv.kernel.shape == (7, 7, 1, 64)
    assert abstract_forward(model, (2, 32, 32, 1)).shape == (2, 2)


def test_bfloat16_batchnorm_modes_on_non_square_images():
    # No dropout, so the train/eval difference comes from BatchNorm alone.
    model = SimpleCNN(2, use_batchnorm=True, dropout_rate=0.0, dtype=jnp.bfloat16, rngs=rngs())
    images, _ = tiny_batch(48, 64, batch=4)
    model.eval()
    state, eval_forward = jit_forward(model)
    first, second = eval_forward(state, images), eval_forward(state, images)
    assert (first.shape, first.dtype) == ((4, 2), jnp.float32)
    assert np.isfinite(np.asarray(first)).all()
    np.testing.assert_array_equal(first, second)
    model.train()
    state, train_forward = jit_forward(model)
    assert not np.allclose(first, train_forward(state, images))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["simple-cnn", "resnet18"])
def test_jitted_split_state_training_reduces_loss(name):
    model = build_classifier(name, 2, rngs=rngs())
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    train_step = make_train_step(graphdef, optimizer)
    images, labels = tiny_batch(32)
    losses = []
    for _ in range(6):
        params, rest, opt_state, loss = train_step(params, rest, opt_state, images, labels)
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses
    # Batch statistics (and dropout's rng counter) come back updated through the state.
    nnx.update(model, params, rest)
    if name == "resnet18":
        assert float(jnp.abs(model.stem.norm.mean[...]).sum()) > 0
    else:
        assert int(model.dropout.rngs.count[...]) == 6
