"""GANomaly (Akcay et al. 2018) trained on normal images through the shared loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxfundus.methods.anomaly import AnomalyMethod
from jaxfundus.methods.base import graphdefs, split_variables
from jaxfundus.models.ganomaly import GanomalyDiscriminator, GanomalyGenerator

# GANomaly loss weights (Akcay et al. 2018; anomalib defaults).
W_ADVERSARIAL, W_CONTEXTUAL, W_ENCODER = 1.0, 50.0, 1.0
# Below this discriminator loss the discriminator has won outright and gives the generator no
# gradient; it is re-initialised (anomalib's `if d_loss < 1e-5: weights_init`).
DISC_COLLAPSE_LOSS = 1e-5


@struct.dataclass
class GanomalyState:
    gen_params: nnx.State
    gen_rest: nnx.State
    gen_opt: optax.OptState
    disc_params: nnx.State
    disc_rest: nnx.State
    disc_opt: optax.OptState
    disc_resets: jax.Array  # int32[]: discriminator re-initialisations so far


class GanomalyMethod(AnomalyMethod):
    """Generator (encoder-decoder-encoder) and discriminator, each with Adam(lr, 0.5, 0.999).

    Generator loss: feature matching on the discriminator's last features x1 + contextual L1
    x50 + latent L2 x1; discriminator: BCE real vs fake, re-initialised (weights and batch
    statistics; its Adam state is kept, as anomalib) when its loss falls below
    DISC_COLLAPSE_LOSS. Image score: the latent distance mean((z_i - z_o)^2) ("latent"), or the
    |x - x'| anomaly map pooled.
    """

    models = ("ganomaly",)
    default_task = "ganomaly"
    image_scores = (*AnomalyMethod.image_scores, "latent")

    def __init__(self, spec, config, steps_per_epoch: int) -> None:
        super().__init__(spec, config, steps_per_epoch)
        self._image_size = config.image_size
        self._dtype = jnp.dtype(config.dtype)
        self._gen_opt = optax.adam(config.learning_rate, b1=0.5, b2=0.999)
        self._disc_opt = optax.adam(config.learning_rate, b1=0.5, b2=0.999)
        self._gen_train, self._gen_eval = graphdefs(lambda: self._generator(0))
        self._disc_train, _ = graphdefs(lambda: self._discriminator(0))
        self._seed = config.seed

    def _generator(self, seed: int) -> GanomalyGenerator:
        return GanomalyGenerator(self._image_size, dtype=self._dtype, rngs=nnx.Rngs(seed))

    def _discriminator(self, seed: int) -> GanomalyDiscriminator:
        return GanomalyDiscriminator(self._image_size, dtype=self._dtype, rngs=nnx.Rngs(seed))

    def init_state(self, seed: int) -> GanomalyState:
        gen_params, gen_rest = split_variables(self._generator(seed))
        disc_params, disc_rest = split_variables(self._discriminator(seed + 1))
        return GanomalyState(gen_params, gen_rest, self._gen_opt.init(gen_params),
                             disc_params, disc_rest, self._disc_opt.init(disc_params),
                             jnp.zeros((), jnp.int32))

    def generator(self, state: GanomalyState, *, train: bool = False) -> GanomalyGenerator:
        graph = self._gen_train if train else self._gen_eval
        return nnx.merge(graph, state.gen_params, state.gen_rest)

    def train_step(self, state: GanomalyState, batch: dict) -> tuple[GanomalyState, dict]:
        images = batch["image"]
        generator = self.generator(state, train=True)
        discriminator = nnx.merge(self._disc_train, state.disc_params, state.disc_rest)
        # A separate copy serves the generator's feature-matching loss, so only the
        # discriminator's own step updates its batch statistics.
        feature_net = nnx.merge(self._disc_train,
                                *jax.tree.map(jnp.copy, (state.disc_params, state.disc_rest)))

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
        gen_updates, gen_opt = self._gen_opt.update(gen_grads, state.gen_opt)
        disc_updates, disc_opt = self._disc_opt.update(disc_grads, state.disc_opt)
        collapsed = disc_loss < DISC_COLLAPSE_LOSS
        disc_params, disc_rest = jax.lax.cond(
            collapsed, self._fresh_discriminator, lambda _: (
                optax.apply_updates(state.disc_params, disc_updates),
                nnx.state(discriminator, nnx.Not(nnx.Param))), state.disc_resets)
        new_state = GanomalyState(
            optax.apply_updates(state.gen_params, gen_updates),
            nnx.state(generator, nnx.Not(nnx.Param)), gen_opt, disc_params, disc_rest,
            disc_opt, state.disc_resets + collapsed.astype(jnp.int32))
        metrics = {"loss": gen_loss, "disc_loss": disc_loss, "adversarial": adversarial,
                   "contextual": contextual, "encoder": encoder,
                   "disc_resets": collapsed.astype(jnp.float32)}
        return new_state, metrics

    def _fresh_discriminator(self, resets: jax.Array) -> tuple[nnx.State, nnx.State]:
        """A newly initialised discriminator's (params, rest), seeded by the run's seed and
        how many resets came before, so a rerun resets to the same weights."""
        # rbg keys: threefry initialisers inside the step add seconds of compilation on CPU.
        key = jax.random.fold_in(jax.random.key(self._seed + 1, impl="rbg"), resets)
        return split_variables(GanomalyDiscriminator(self._image_size, dtype=self._dtype,
                                                     rngs=nnx.Rngs(key)))

    def image_score(self, state: GanomalyState, images: jax.Array) -> jax.Array:
        if self.config.image_score != "latent":
            return super().image_score(state, images)
        _, latent_i, latent_o = self.generator(state)(images)
        return jnp.mean((latent_i - latent_o) ** 2, axis=-1)

    def anomaly_maps(self, state: GanomalyState, images: jax.Array) -> jax.Array:
        """float32[B,S,S,3] in [-1,1] -> |x - x'| averaged over colours, float32[B,S,S]."""
        return jnp.abs(images - self.reconstruct(state, images)).mean(axis=-1)

    def reconstruct(self, state: GanomalyState, images: jax.Array) -> jax.Array:
        """float32[B,S,S,3] in [-1,1] -> the generator's reconstruction, same shape and range."""
        return self.generator(state)(images)[0]


METHOD = GanomalyMethod
