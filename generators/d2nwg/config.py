"""The rules of ``conf/generator/d2nwg.yaml``: a type and range per key, and the relations across keys, checked
by ``zoo fit`` before it writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from generators.config import DATA, FRACTION, NON_NEGATIVE, OPTIM, POSITIVE, PROBABILITY, TEXT, name_rule
from zoo.app.checks import Rule, number, one_of, typed
from zoo.errors import ZooError

CHECKS: dict[str, Rule] = {
    "name": name_rule("d2nwg"),
    **DATA,
    "mode_column": TEXT,
    "val_fraction": FRACTION,  # of the zoo's datasets
    # VAE
    "chunk_size": number(int, 0),  # 0: one token
    "latent_per_chunk": number(int, 1),
    "vae_hidden": number(int, 0),  # 0: linear
    "vae_steps": number(int, 0),
    "vae_batch_size": number(int, 1),
    "vae_lr": POSITIVE,
    "vae_weight_decay": NON_NEGATIVE,
    "kl_weight": NON_NEGATIVE,
    "vae_input_noise": NON_NEGATIVE,
    "vae_latent_noise": NON_NEGATIVE,
    # dataset encoder
    "label_permutation": number(float, 0, 1),
    "shots": number(int, 1),
    "encoder_hidden": number(int, 1),
    "embed_dim": number(int, 1),
    "heads": number(int, 1),
    "inducing_points": number(int, 1),
    # diffusion (diffusers' DDPM/DDIM schedulers)
    "residual": typed(bool, "true or false"),
    "residual_temperature": NON_NEGATIVE,
    "mean_weight": NON_NEGATIVE,
    "timesteps": number(int, 1),
    "beta_schedule": one_of("linear", "scaled_linear", "squaredcos_cap_v2"),
    "beta_start": number(float, 0, 1, low_open=True, high_open=True),
    "beta_end": number(float, 0, 1, low_open=True, high_open=True),
    "ddim_steps": number(int, 1),
    "hidden": number(int, 1),
    "blocks": number(int, 1),
    "time_dim": number(int, 1),
    "dropout": PROBABILITY,
    "cond_dropout": PROBABILITY,
    "guidance": NON_NEGATIVE,
    **OPTIM,
}


def relations(cfg: Mapping[str, Any]) -> None:
    """What one key's rule cannot see: betas that grow, DDIM steps within the training steps, whole heads."""
    if cfg["beta_start"] >= cfg["beta_end"]:
        raise ZooError(
            f"generator.beta_start={cfg['beta_start']!r} is invalid: expected < generator.beta_end={cfg['beta_end']!r}"
        )
    if cfg["ddim_steps"] > cfg["timesteps"]:
        raise ZooError(
            f"generator.ddim_steps={cfg['ddim_steps']!r} is invalid: expected <= "
            f"generator.timesteps={cfg['timesteps']!r}"
        )
    if cfg["encoder_hidden"] % cfg["heads"]:
        raise ZooError(
            f"generator.heads={cfg['heads']!r} is invalid: expected a divisor of generator.encoder_hidden="
            f"{cfg['encoder_hidden']!r} (attention splits it into heads)"
        )
