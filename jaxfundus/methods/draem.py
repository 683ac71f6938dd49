"""DRAEM-style detector (Zavrtanik et al. 2021) trained on normal images with synthetic anomalies.

Each training image gets, with probability config.anomaly_probability, one synthetic anomaly
painted in on the host (`SyntheticAnomalies`, around jaxfundus.synthetic.anomalies.paint_anomaly):
a Perlin-shaped foreign texture (config.texture_probability), a change of existing structure
(config.structure_probability) or the lesion stamps of one of the diseases it may train on,
which are all stamped diseases but those held out (config.heldout_diseases and
config.validation_diseases). The network learns to give back the clean picture and to segment
what was painted; its predicted anomaly map, pooled, scores an image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from jaxfundus.config import ConfigError
from jaxfundus.data.labels import DISEASES
from jaxfundus.methods.anomaly import AnomalyMethod
from jaxfundus.methods.base import graphdefs, split_variables
from jaxfundus.methods.kinds import untrained_diseases
from jaxfundus.models.draem import DRAEM, check_draem_size, draem_loss
from jaxfundus.synthetic.anomalies import STAMPS, paint_anomaly

FINAL_LEARNING_RATE_FRACTION = 0.1  # the cosine schedule ends at this share of the peak


@dataclasses.dataclass(frozen=True)
class SyntheticAnomalies:
    """The pipeline's per-example transform (picklable for Grain workers): uint8[S,S,3] and a
    seeded generator -> {"anomaly_image": uint8[S,S,3], "anomaly_mask": bool[S,S]}.

    With probability `anomaly_probability` the image gets one synthetic anomaly (a texture with
    probability `texture_probability`, a structural change with `structure_probability`, else
    the lesions of one of `diseases`) and the mask is exactly its changed pixels; otherwise the
    image is returned unchanged with an empty mask.
    """

    diseases: tuple[str, ...]
    anomaly_probability: float
    texture_probability: float
    structure_probability: float = 0.0

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if rng.random() >= self.anomaly_probability:
            return {"anomaly_image": image, "anomaly_mask": np.zeros(image.shape[:2], bool)}
        painted, mask = paint_anomaly(image, rng, self.diseases, self.texture_probability,
                                      p_structure=self.structure_probability)
        return {"anomaly_image": painted, "anomaly_mask": mask}


def moving_average(average: jax.Array, latest: jax.Array, decay: float) -> jax.Array:
    """decay * average + (1 - decay) * latest for floating-point arrays (exactly `latest` at
    decay 0); integer ones (counters) are taken from `latest`."""
    if not jnp.issubdtype(latest.dtype, jnp.floating):
        return latest
    return decay * average + (1 - decay) * latest


@struct.dataclass
class DraemState:
    """Training variables (`params`, `rest`: BatchNorm statistics), Adam's state, and their
    exponential moving averages, which evaluation and prediction use."""

    params: nnx.State
    rest: nnx.State
    opt: optax.OptState
    average_params: nnx.State
    average_rest: nnx.State


class DraemMethod(AnomalyMethod):
    """Reconstructive + discriminative sub-networks (jaxfundus.models.draem), both
    config.draem_features wide at the top level, with 4 poolings; loss: L2 + (1 - SSIM) of the
    reconstruction against the clean image, plus the focal loss of the predicted map against
    the painted mask. Adam with a cosine decay of the learning rate over the run. Anomaly map:
    the predicted anomaly probability per pixel. Evaluation uses an exponential moving average
    of the weights and statistics (decay config.draem_ema_decay per step; 0 = the latest).
    """

    models = ("draem",)
    default_task = "draem"
    map_title = "predicted anomaly"
    map_range = (0.0, 1.0)
    levels = 4

    def __init__(self, spec, config, steps_per_epoch: int) -> None:
        super().__init__(spec, config, steps_per_epoch)
        try:
            check_draem_size(config.image_size, self.levels)
        except ValueError as error:
            raise ConfigError(f"image_size = {config.image_size}: {error}") from None
        unseen = untrained_diseases(config)
        self.lesion_diseases = tuple(d for d in DISEASES if d in STAMPS and d not in unseen)
        self.example_transform = SyntheticAnomalies(
            self.lesion_diseases, config.anomaly_probability, config.texture_probability,
            config.structure_probability)
        self._image_size = config.image_size
        self._features = config.draem_features
        self._dtype = jnp.dtype(config.dtype)
        schedule = optax.cosine_decay_schedule(config.learning_rate,
                                               max(config.epochs * steps_per_epoch, 1),
                                               alpha=FINAL_LEARNING_RATE_FRACTION)
        self._optimizer = optax.adam(schedule)
        self._ema_decay = config.draem_ema_decay
        self._train_graph, self._eval_graph = graphdefs(lambda: self._draem(0))

    def _draem(self, seed: int) -> DRAEM:
        return DRAEM(self._image_size, recon_features=self._features,
                     seg_features=self._features, levels=self.levels, dtype=self._dtype,
                     rngs=nnx.Rngs(seed))

    def init_state(self, seed: int) -> DraemState:
        params, rest = split_variables(self._draem(seed))
        return DraemState(params, rest, self._optimizer.init(params), params, rest)

    def draem(self, state: DraemState, *, train: bool = False) -> DRAEM:
        """The model to train (latest variables) or, by default, to evaluate (averaged)."""
        if train:
            return nnx.merge(self._train_graph, state.params, state.rest)
        return nnx.merge(self._eval_graph, state.average_params, state.average_rest)

    def train_step(self, state: DraemState, batch: dict) -> tuple[DraemState, dict]:
        """batch: image (clean) and anomaly_image float32[B,S,S,3] in [-1,1], anomaly_mask
        bool[B,S,S] (from SyntheticAnomalies, augmented alike on the device)."""
        model = self.draem(state, train=True)

        def loss_fn(model):
            return draem_loss(model, batch["anomaly_image"], batch["image"],
                              batch["anomaly_mask"])

        (loss, parts), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        updates, opt = self._optimizer.update(grads, state.opt)
        params = optax.apply_updates(state.params, updates)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        average_params, average_rest = jax.tree.map(
            lambda average, latest: moving_average(average, latest, self._ema_decay),
            (state.average_params, state.average_rest), (params, rest))
        new_state = DraemState(params, rest, opt, average_params, average_rest)
        return new_state, {"loss": loss, **parts}

    def score_fold(self, trainer, state, fold, directory, write_files):
        predictions, metrics = super().score_fold(trainer, state, fold, directory, write_files)
        metrics["synthetic_lesions"] = list(self.lesion_diseases)
        return predictions, metrics

    def anomaly_maps(self, state: DraemState, images: jax.Array) -> jax.Array:
        """float32[B,S,S,3] in [-1,1] -> the predicted anomaly probability, float32[B,S,S]."""
        return self.draem(state).anomaly_map(images)

    def reconstruct(self, state: DraemState, images: jax.Array) -> jax.Array:
        """float32[B,S,S,3] in [-1,1] -> the reconstructive sub-network's output, same shape."""
        return self.draem(state).reconstructive(images)


METHOD = DraemMethod
