"""Unsupervised anomaly detectors on the shared loop: GANomaly and a convolutional VAE.

Both train on normal images only, take inputs scaled to [-1, 1] (their decoders end in tanh)
and score each image (higher = more anomalous). Checkpoints are chosen by validation AUROC;
thresholds are fitted on validation later (jaxfundus.evaluate.results).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxfundus.metrics import roc_auc
from jaxfundus.models.ganomaly import GanomalyDiscriminator, GanomalyGenerator
from jaxfundus.models.vae import ConvVAE

# GANomaly loss weights (Akcay et al. 2018; anomalib defaults).
W_ADVERSARIAL, W_CONTEXTUAL, W_ENCODER = 1.0, 50.0, 1.0


def _graphs(build):
    """(train graphdef, eval graphdef) of a module, without allocating weights."""
    model = nnx.eval_shape(build)
    model.train()
    train_graph = nnx.split(model, nnx.Param, ...)[0]
    model.eval()
    return train_graph, nnx.split(model, nnx.Param, ...)[0]


def _split(module) -> tuple[nnx.State, nnx.State]:
    _, params, rest = nnx.split(module, nnx.Param, ...)
    return params, rest


class _AnomalyMethod:
    normalization = "tanh"
    selection_metric = "auroc"

    def validation_metrics(self, outputs: dict, targets: np.ndarray) -> dict:
        scores = outputs["score"]
        both = 0 < targets.sum() < len(targets)
        return {"auroc": roc_auc(targets, scores) if both else float("nan"),
                "normal_score": float(scores[targets == 0].mean()) if (targets == 0).any()
                else float("nan")}


class GanomalyMethod(_AnomalyMethod):
    """Generator (encoder-decoder-encoder) and discriminator, each with Adam(2e-4, 0.5, 0.999).

    Generator loss: feature matching on the discriminator's last features x1 + contextual L1
    x50 + latent L2 x1; discriminator: BCE real vs fake. Score: mean((z_i - z_o)^2).
    State: {gen_params, gen_rest, gen_opt, disc_params, disc_rest, disc_opt}.
    """

    def __init__(self, image_size: int, *, learning_rate: float = 2e-4,
                 dtype: str = "float32") -> None:
        self._image_size = image_size
        self._dtype = jnp.dtype(dtype)
        self._gen_opt = optax.adam(learning_rate, b1=0.5, b2=0.999)
        self._disc_opt = optax.adam(learning_rate, b1=0.5, b2=0.999)
        self._gen_train, self._gen_eval = _graphs(lambda: self._generator(0))
        self._disc_train, _ = _graphs(lambda: self._discriminator(0))

    def _generator(self, seed: int) -> GanomalyGenerator:
        return GanomalyGenerator(self._image_size, dtype=self._dtype, rngs=nnx.Rngs(seed))

    def _discriminator(self, seed: int) -> GanomalyDiscriminator:
        return GanomalyDiscriminator(self._image_size, dtype=self._dtype, rngs=nnx.Rngs(seed))

    def init_state(self, seed: int, train_targets: np.ndarray) -> dict:
        gen_params, gen_rest = _split(self._generator(seed))
        disc_params, disc_rest = _split(self._discriminator(seed + 1))
        return {"gen_params": gen_params, "gen_rest": gen_rest,
                "gen_opt": self._gen_opt.init(gen_params),
                "disc_params": disc_params, "disc_rest": disc_rest,
                "disc_opt": self._disc_opt.init(disc_params)}

    def generator(self, state: dict, *, train: bool = False) -> GanomalyGenerator:
        graph = self._gen_train if train else self._gen_eval
        return nnx.merge(graph, state["gen_params"], state["gen_rest"])

    def train_step(self, state: dict, batch: dict) -> tuple[dict, dict]:
        images = batch["image"]
        generator = self.generator(state, train=True)
        discriminator = nnx.merge(self._disc_train, state["disc_params"], state["disc_rest"])
        # A separate copy serves the generator's feature-matching loss, so only the
        # discriminator's own step updates its batch statistics.
        feature_net = nnx.merge(self._disc_train,
                                *jax.tree.map(jnp.copy, (state["disc_params"], state["disc_rest"])))

        def generator_loss(generator, feature_net):
            fake, latent_i, latent_o = generator(images)
            _, real_features = feature_net(images)
            _, fake_features = feature_net(fake)
            adversarial = jnp.mean((real_features - fake_features) ** 2)
            contextual = jnp.mean(jnp.abs(images - fake))
            encoder = jnp.mean((latent_i - latent_o) ** 2)
            loss = W_ADVERSARIAL * adversarial + W_CONTEXTUAL * contextual + W_ENCODER * encoder
            return loss, (fake, adversarial, contextual, encoder)

        (gen_loss, (fake, adversarial, contextual, encoder)), gen_grads = nnx.value_and_grad(
            generator_loss, argnums=0, has_aux=True)(generator, feature_net)
        fake = jax.lax.stop_gradient(fake)

        def discriminator_loss(discriminator):
            real_logits, _ = discriminator(images)
            fake_logits, _ = discriminator(fake)
            return 0.5 * (optax.sigmoid_binary_cross_entropy(real_logits, 1.0).mean()
                          + optax.sigmoid_binary_cross_entropy(fake_logits, 0.0).mean())

        disc_loss, disc_grads = nnx.value_and_grad(discriminator_loss)(discriminator)
        gen_updates, gen_opt = self._gen_opt.update(gen_grads, state["gen_opt"])
        disc_updates, disc_opt = self._disc_opt.update(disc_grads, state["disc_opt"])
        new_state = {
            "gen_params": optax.apply_updates(state["gen_params"], gen_updates),
            "gen_rest": nnx.state(generator, nnx.Not(nnx.Param)), "gen_opt": gen_opt,
            "disc_params": optax.apply_updates(state["disc_params"], disc_updates),
            "disc_rest": nnx.state(discriminator, nnx.Not(nnx.Param)), "disc_opt": disc_opt,
        }
        metrics = {"loss": gen_loss, "disc_loss": disc_loss, "adversarial": adversarial,
                   "contextual": contextual, "encoder": encoder}
        return new_state, metrics

    def eval_step(self, state: dict, batch: dict) -> dict:
        _, latent_i, latent_o = self.generator(state)(batch["image"])
        return {"score": jnp.mean((latent_i - latent_o) ** 2, axis=-1)}

    def reconstruct(self, state: dict, images: jax.Array) -> jax.Array:
        """float32[B,S,S,3] in [-1,1] -> the generator's reconstruction, same shape and range."""
        return self.generator(state)(images)[0]


class VaeMethod(_AnomalyMethod):
    """Convolutional VAE; loss = per-image summed squared error + beta * KL.

    Score: mean squared reconstruction error of the posterior mean (+ kl_weight_in_score * KL).
    State: {params, rest, opt}.
    """

    def __init__(self, image_size: int, *, learning_rate: float = 1e-3, beta: float = 1.0,
                 kl_weight_in_score: float = 0.0, dtype: str = "float32") -> None:
        self._image_size = image_size
        self._dtype = jnp.dtype(dtype)
        self._beta = beta
        self._kl_weight_in_score = kl_weight_in_score
        self._optimizer = optax.adam(learning_rate)
        self._train_graph, self._eval_graph = _graphs(lambda: self._vae(0))

    def _vae(self, seed: int) -> ConvVAE:
        return ConvVAE(self._image_size, dtype=self._dtype, rngs=nnx.Rngs(seed))

    def init_state(self, seed: int, train_targets: np.ndarray) -> dict:
        params, rest = _split(self._vae(seed))
        return {"params": params, "rest": rest, "opt": self._optimizer.init(params)}

    def vae(self, state: dict, *, train: bool = False) -> ConvVAE:
        graph = self._train_graph if train else self._eval_graph
        return nnx.merge(graph, state["params"], state["rest"])

    def train_step(self, state: dict, batch: dict) -> tuple[dict, dict]:
        images = batch["image"]
        vae = self.vae(state, train=True)

        def loss_fn(vae):
            recon, mu, logvar = vae(images)
            reconstruction = jnp.sum((recon - images) ** 2, axis=(1, 2, 3)).mean()
            kl = _kl(mu, logvar).mean()
            return reconstruction + self._beta * kl, (reconstruction, kl)

        (loss, (reconstruction, kl)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(vae)
        updates, opt = self._optimizer.update(grads, state["opt"])
        new_state = {"params": optax.apply_updates(state["params"], updates),
                     "rest": nnx.state(vae, nnx.Not(nnx.Param)), "opt": opt}
        return new_state, {"loss": loss, "reconstruction": reconstruction, "kl": kl}

    def eval_step(self, state: dict, batch: dict) -> dict:
        images = batch["image"]
        recon, mu, logvar = self.vae(state)(images)
        error = jnp.mean((recon - images) ** 2, axis=(1, 2, 3))
        return {"score": error + self._kl_weight_in_score * _kl(mu, logvar)}

    def reconstruct(self, state: dict, images: jax.Array) -> jax.Array:
        """float32[B,S,S,3] in [-1,1] -> the reconstruction from the posterior mean."""
        return self.vae(state)(images)[0]


def _kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image: float32[B]."""
    return -0.5 * jnp.sum(1 + logvar - mu**2 - jnp.exp(logvar), axis=-1)
