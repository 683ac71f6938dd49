"""A convolutional VAE trained on normal images; reconstruction error scores anomalies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxfundus.methods.anomaly import AnomalyMethod
from jaxfundus.methods.base import graphdefs, split_variables
from jaxfundus.models.losses import ssim
from jaxfundus.models.vae import ConvVAE


@struct.dataclass
class VaeState:
    params: nnx.State
    rest: nnx.State
    opt: optax.OptState


class VaeMethod(AnomalyMethod):
    """Loss per image = summed squared error + config.ssim_weight * (number of values) *
    (1 - SSIM) + beta * KL; Adam.

    Anomaly map: |x - x'| (mean over colours) of the posterior mean's reconstruction.
    """

    models = ("vae",)
    default_task = "vae"
    beta = 1.0

    def __init__(self, spec, config, steps_per_epoch: int) -> None:
        super().__init__(spec, config, steps_per_epoch)
        self._image_size = config.image_size
        self._dtype = jnp.dtype(config.dtype)
        self._optimizer = optax.adam(config.learning_rate)
        self._train_graph, self._eval_graph = graphdefs(lambda: self._vae(0))

    def _vae(self, seed: int) -> ConvVAE:
        return ConvVAE(self._image_size, dtype=self._dtype, rngs=nnx.Rngs(seed))

    def init_state(self, seed: int) -> VaeState:
        params, rest = split_variables(self._vae(seed))
        return VaeState(params, rest, self._optimizer.init(params))

    def vae(self, state: VaeState, *, train: bool = False) -> ConvVAE:
        graph = self._train_graph if train else self._eval_graph
        return nnx.merge(graph, state.params, state.rest)

    def train_step(self, state: VaeState, batch: dict) -> tuple[VaeState, dict]:
        images = batch["image"]
        vae = self.vae(state, train=True)
        ssim_weight = self.config.ssim_weight

        def loss_fn(vae):
            recon, mu, logvar = vae(images)
            reconstruction = jnp.sum((recon - images) ** 2, axis=(1, 2, 3)).mean()
            if ssim_weight:
                # (1 - SSIM) on the summed error's scale: one unit per value, as the error is.
                values = images[0].size
                reconstruction += ssim_weight * values * (1 - ssim(recon, images)).mean()
            kl = _kl(mu, logvar).mean()
            return reconstruction + self.beta * kl, (reconstruction, kl)

        (loss, (reconstruction, kl)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(vae)
        updates, opt = self._optimizer.update(grads, state.opt)
        new_state = VaeState(optax.apply_updates(state.params, updates),
                             nnx.state(vae, nnx.Not(nnx.Param)), opt)
        return new_state, {"loss": loss, "reconstruction": reconstruction, "kl": kl}

    def anomaly_maps(self, state: VaeState, images: jax.Array) -> jax.Array:
        """float32[B,S,S,3] in [-1,1] -> |x - x'| averaged over colours, float32[B,S,S]."""
        return jnp.abs(images - self.reconstruct(state, images)).mean(axis=-1)

    def reconstruct(self, state: VaeState, images: jax.Array) -> jax.Array:
        """float32[B,S,S,3] in [-1,1] -> the reconstruction from the posterior mean."""
        return self.vae(state)(images)[0]


def _kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image: float32[B]."""
    return -0.5 * jnp.sum(1 + logvar - mu**2 - jnp.exp(logvar), axis=-1)


METHOD = VaeMethod
