"""Fine-tuning optimizer: frozen backbone warm-up, lower backbone learning rate, no weight decay
on BatchNorm and bias parameters; on a real small classifier's Params."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxfundus.models.simple_cnn import SimpleCNN
from jaxfundus.train.optimizers import decay_mask, head_labels, make_finetune_optimizer


def _model() -> SimpleCNN:
    # An rbg key: its initializers compile in a fraction of threefry's time.
    return SimpleCNN(3, features=(8, 16), hidden_features=16, use_batchnorm=True,
                     rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


def _flat(params) -> dict[str, np.ndarray]:
    return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): np.asarray(x)
            for path, x in jax.tree_util.tree_leaves_with_path(params)}


def _is_head(key: str) -> bool:
    return key.startswith("head/")


def _train(optimizer, steps: int) -> list[dict[str, np.ndarray]]:
    """Real cross-entropy steps on a fixed random batch; the Params after each step (0 = init).
    Eval mode (no BN statistics or dropout) keeps it to what the optimizer does."""
    model = _model()
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(4, 16, 16, 3)), jnp.float32)
    labels = jnp.asarray([0, 1, 2, 0])
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(params):
            logits = nnx.merge(graphdef, params, rest)(images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    history = [_flat(params)]
    for _ in range(steps):
        params, opt_state = step(params, opt_state)
        history.append(_flat(params))
    return history


def test_frozen_backbone_gets_zero_updates_then_trains():
    frozen = 3
    history = _train(make_finetune_optimizer(1e-2, 1e-2, total_steps=20, frozen_steps=frozen),
                     steps=frozen + 2)
    start, thawed, later = history[0], history[frozen], history[-1]
    backbone = [key for key in start if not _is_head(key)]
    head = [key for key in start if _is_head(key)]
    assert backbone and head
    assert all(np.array_equal(thawed[key], start[key]) for key in backbone)
    assert all(not np.array_equal(thawed[key], start[key]) for key in head)
    assert all(not np.array_equal(later[key], start[key]) for key in backbone)


def test_weight_decay_skips_batchnorm_and_biases():
    _, params, _ = nnx.split(_model(), nnx.Param, ...)
    mask = _flat(decay_mask(params))
    assert {key for key, decays in mask.items() if decays} == {
        "blocks/0/conv/kernel/value", "blocks/1/conv/kernel/value", "hidden/kernel/value",
        "head/kernel/value"}
    # With zero gradients Adam's step is zero, so only weight decay can move a parameter.
    optimizer = make_finetune_optimizer(0.1, 0.5, total_steps=10)
    state = optimizer.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    before = _flat(params)
    update = jax.jit(optimizer.update)
    for _ in range(3):
        updates, state = update(zeros, state, params)
        params = optax.apply_updates(params, updates)
    after = _flat(params)
    for key, decays in mask.items():
        shrank = np.abs(after[key]).sum() < np.abs(before[key]).sum()
        assert shrank if decays else np.array_equal(after[key], before[key]), key


@pytest.mark.parametrize("scale", [0.1, 0.01])
def test_backbone_steps_are_smaller_than_the_head_s_for_equal_gradients(scale):
    _, params, _ = nnx.split(_model(), nnx.Param, ...)
    labels = _flat(head_labels(params))
    optimizer = make_finetune_optimizer(1e-2, 0.0, total_steps=10, backbone_lr_scale=scale)
    state = optimizer.init(params)
    ones = jax.tree.map(jnp.ones_like, params)
    before = _flat(params)
    update = jax.jit(optimizer.update)
    for _ in range(3):
        updates, state = update(ones, state, params)
        params = optax.apply_updates(params, updates)
    moved = {key: np.abs(value - before[key]) for key, value in _flat(params).items()}
    head = np.concatenate([moved[k].ravel() for k in moved if labels[k] == "head"])
    backbone = np.concatenate([moved[k].ravel() for k in moved if labels[k] == "backbone"])
    assert backbone.max() < head.min()
    np.testing.assert_allclose(backbone.mean() / head.mean(), scale, rtol=1e-3)


def test_frozen_steps_must_leave_training_steps():
    with pytest.raises(ValueError, match="frozen_steps 10"):
        make_finetune_optimizer(1e-3, 0.0, total_steps=10, frozen_steps=10)


def test_thawed_backbone_steps_like_a_fresh_adam():
    """Adam's moments and step count wait while the backbone is frozen, so the first updates
    after thawing are those of a fresh AdamW, not inflated by bias correction."""
    import jax.numpy as jnp
    import optax

    from jaxfundus.train.optimizers import frozen_for, warmup_cosine

    params = {"w": jnp.ones((3, 3))}
    grads = [{"w": jnp.full((3, 3), 0.1 * (i + 1))} for i in range(8)]
    frozen = frozen_for(optax.adamw(warmup_cosine(1e-2, 20), weight_decay=0.0), 5)
    fresh = optax.adamw(warmup_cosine(1e-2, 20), weight_decay=0.0)
    state, fresh_state = frozen.init(params), fresh.init(params)
    for i, grad in enumerate(grads):
        update, state = frozen.update(grad, state, params)
        if i < 5:
            assert float(jnp.abs(update["w"]).max()) == 0.0
            continue
        expected, fresh_state = fresh.update(grad, fresh_state, params)
        assert jnp.allclose(update["w"], expected["w"], rtol=1e-6)
