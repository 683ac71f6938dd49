"""PyTorch reference of jaxfundus' GANomaly training step (same layers, losses and optimisers).

anomalib's GANomaly layout at the shapes jaxfundus uses (first conv padding 1, no extra
layers, latent 100, 64 base features): generator = encoder -> decoder -> encoder, DCGAN
discriminator; generator loss = feature matching x1 + L1 x50 + latent L2 x1, discriminator
BCE; Adam(2e-4, 0.5, 0.999) each. Timed by benchmarks/torch_reference.py. Needs torch (not a
jaxfundus dependency).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def encoder(image_size: int, out_features: int, base: int = 64) -> nn.Sequential:
    """conv 4x4/2 + LeakyReLU, [conv 4x4/2 + BN + LeakyReLU] down to 4x4, conv 4x4 valid."""
    layers: list[nn.Module] = [nn.Conv2d(3, base, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
    features = base
    for _ in range(int(math.log2(image_size)) - 3):
        layers += [nn.Conv2d(features, 2 * features, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(2 * features), nn.LeakyReLU(0.2)]
        features *= 2
    layers.append(nn.Conv2d(features, out_features, 4, 1, 0, bias=False))
    return nn.Sequential(*layers)


def decoder(image_size: int, latent: int, base: int = 64) -> nn.Sequential:
    """convT 4x4 valid to 4x4, [convT 4x4/2 + BN + ReLU] up, convT 4x4/2 + tanh."""
    pyramid = int(math.log2(image_size)) - 3
    features = base * 2**pyramid
    layers: list[nn.Module] = [nn.ConvTranspose2d(latent, features, 4, 1, 0, bias=False),
                               nn.BatchNorm2d(features), nn.ReLU()]
    for _ in range(pyramid):
        layers += [nn.ConvTranspose2d(features, features // 2, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(features // 2), nn.ReLU()]
        features //= 2
    layers += [nn.ConvTranspose2d(features, 3, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(self, image_size: int, latent: int = 100) -> None:
        super().__init__()
        self.encoder = encoder(image_size, latent)
        self.decoder = decoder(image_size, latent)
        self.reencoder = encoder(image_size, latent)

    def forward(self, x):
        latent_i = self.encoder(x)
        fake = self.decoder(latent_i)
        return fake, latent_i, self.reencoder(fake)


class Discriminator(nn.Module):
    def __init__(self, image_size: int) -> None:
        super().__init__()
        net = encoder(image_size, 1)
        self.features, self.classifier = net[:-1], net[-1]

    def forward(self, x):
        features = self.features(x)
        return self.classifier(features).flatten(), features


def make_step(image_size: int, batch_size: int):
    """One GANomaly training step on fixed random images, as a zero-argument callable."""
    torch.manual_seed(0)
    generator, discriminator = Generator(image_size), Discriminator(image_size)
    gen_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    disc_opt = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    images = torch.rand(batch_size, 3, image_size, image_size) * 2 - 1
    bce = nn.BCEWithLogitsLoss()

    def step() -> None:
        gen_opt.zero_grad(set_to_none=True)
        discriminator.requires_grad_(False)  # as in jaxfundus: no discriminator gradient here
        fake, latent_i, latent_o = generator(images)
        _, real_features = discriminator(images)
        _, fake_features = discriminator(fake)
        loss = (torch.mean((real_features - fake_features) ** 2)
                + 50 * torch.mean(torch.abs(images - fake))
                + torch.mean((latent_i - latent_o) ** 2))
        loss.backward()
        gen_opt.step()
        discriminator.requires_grad_(True)
        disc_opt.zero_grad(set_to_none=True)
        real_logits, _ = discriminator(images)
        fake_logits, _ = discriminator(fake.detach())
        disc_loss = 0.5 * (bce(real_logits, torch.ones_like(real_logits))
                           + bce(fake_logits, torch.zeros_like(fake_logits)))
        disc_loss.backward()
        disc_opt.step()

    return step
