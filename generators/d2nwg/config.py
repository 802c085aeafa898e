"""The typed config of ``conf/generator/d2nwg.yaml`` (``zoo.app.schema``): each key's type, default, rule and doc,
checked by ``zoo fit`` before it writes; ``zoo fit --help`` lists it."""

from __future__ import annotations

from dataclasses import dataclass

from generators.config import FRACTION, NON_NEGATIVE, POSITIVE, PROBABILITY, TEXT, name_rule
from zoo.app.checks import list_of, number, one_of, typed
from zoo.app.schema import Schema, key
from zoo.errors import ZooError


@dataclass(frozen=True)
class D2nwgConfig(Schema, group="generator", name="d2nwg"):
    """conf/generator/d2nwg.yaml."""

    WHERE = "generator."

    name: str = key("d2nwg", name_rule("d2nwg"), "the generator (generator=NAME chooses the config)")
    layout: str | None = key(None, TEXT, "layout key; required when the zoo holds several")
    query: str | None = key(None, TEXT, 'filter over the models table that runs no code, e.g. "seed < 3"')
    checkpoint: int = key(-1, number(int), "which checkpoint of each model (-1: its last)")
    canonical: str | bool = key(
        False,
        one_of("auto", True, False),
        "raw weights: within one seed (mode) the zoo's models share their init, so weights are ~linear in the task; "
        "re-basing each to one reference permutes them per task and breaks that (validation tasks, oracle ridge on "
        "(position, digit): 0.967 raw vs 0.832 aligned; encoder + regression head alone 0.970 vs 0.835). auto: the "
        "store's canonical weights, else aligned here (Git Re-Basin)",
    )
    mode_column: str = key(
        "seed",
        TEXT,
        "a discrete latent drawn uniformly at sampling: models of one seed share an init across tasks, so within a "
        "seed weights are nearly linear in the task (ridge on held-out digit tasks: 95% accuracy for one seed, 80% "
        "over all seeds); null: none",
    )
    val_fraction: float = key(
        0.1, FRACTION, "of the zoo's DATASETS (all their models), held out for early stopping / selection"
    )
    chunk_size: int = key(
        4096, number(int, 0), "weights per token; 0 or >= the net's size: one token (a whole-vector VAE)"
    )
    latent_per_chunk: int = key(192, number(int, 1), "latent dimensions per token")
    vae_hidden: int = key(
        0,
        number(int, 0),
        "0: linear encoder/decoder (probabilistic PCA); an MLP path overfits: unseen tasks 93% vs 95%",
    )
    vae_steps: int = key(500, number(int, 0), "refines the PCA start of the linear paths")
    vae_batch_size: int = key(64, number(int, 1), "")
    vae_lr: float = key(0.0003, POSITIVE, "")
    vae_weight_decay: float = key(0.0, NON_NEGATIVE, "")
    kl_weight: float = key(1e-06, NON_NEGATIVE, "as published (an almost deterministic autoencoder)")
    vae_input_noise: float = key(0.001, NON_NEGATIVE, "p-diff's noise augmentation of the VAE's input and latent")
    vae_latent_noise: float = key(0.05, NON_NEGATIVE, "")
    label_permutation: float = key(
        0.0,
        number(float, 0, 1),
        "training: share of tasks relabeled (support sets and output units permuted alike); 0.5 gave less overfitting"
        " (val loss 0.554 vs 0.592) but lower sample accuracy on the validation tasks (best 0.756 vs 0.826 at 0) "
        "within 2.3k steps",
    )
    shots: int = key(
        5, number(int, 1), "examples per class (training: redrawn every step; sampling: drawn with the seed)"
    )
    encoder_hidden: int = key(64, number(int, 1), "")
    embed_dim: int = key(128, number(int, 1), "")
    heads: int = key(4, number(int, 1), "")
    inducing_points: int = key(4, number(int, 1), "published 32 over 20 images; here sets of 5 shots")
    residual: bool = key(
        True,
        typed(bool, "true or false"),
        "a regression head predicts the latent from the dataset embedding and mode; the diffusion models what it "
        "leaves (false: the latent itself, as published). An oracle-conditioned latent diffusion reached only 60-72% "
        "on unseen digit tasks in 2-3k CPU steps",
    )
    residual_temperature: float = key(
        0.1,
        NON_NEGATIVE,
        "sampling: latent = regression + this x the diffusion's residual sample, chosen on the validation tasks' "
        "TRAINING split of d2nwg-digits (mean acc at 0 / 0.1 / 0.25 / 0.5 / 1: 0.9697 / 0.9699 / 0.9697 / 0.9683 / "
        "0.9626); 0: the regression alone, one net per mode",
    )
    mean_weight: float = key(1.0, NON_NEGATIVE, "weight of the regression head's MSE beside the eps-MSE")
    timesteps: int = key(1000, number(int, 1), "")
    beta_schedule: str = key("linear", one_of("linear", "scaled_linear", "squaredcos_cap_v2"), "")
    beta_start: float = key(0.0015, number(float, 0, 1, low_open=True, high_open=True), "")
    beta_end: float = key(0.0155, number(float, 0, 1, low_open=True, high_open=True), "")
    ddim_steps: int = key(50, number(int, 1), "")
    hidden: int = key(512, number(int, 1), "")
    blocks: int = key(3, number(int, 1), "")
    time_dim: int = key(128, number(int, 1), "")
    dropout: float = key(0.0, PROBABILITY, "")
    cond_dropout: float = key(0.1, PROBABILITY, "embeddings replaced by a learned null one (classifier-free guidance)")
    guidance: float = key(1.0, NON_NEGATIVE, "1: plain conditional sampling; > 1 pushes samples toward the dataset")
    lr: float = key(0.001, POSITIVE, "")
    weight_decay: float = key(0.01, NON_NEGATIVE, "")
    betas: list[float] = key([0.9, 0.999], list_of(number(float, 0, 1, high_open=True), length=2), "")
    batch_size: int = key(64, number(int, 1), "")
    ema_decay: float = key(0.999, number(float, 0, 1), "")
    val_samples: int = key(
        64, number(int, 0), "samples over the validation tasks at each validation (training-split accuracy)"
    )

    def relations(self) -> None:
        """What one key's rule cannot see: betas that grow, DDIM steps within the training steps, whole heads."""
        if self.beta_start >= self.beta_end:
            raise ZooError(
                f"generator.beta_start={self.beta_start!r} is invalid: expected < generator.beta_end={self.beta_end!r}"
            )
        if self.ddim_steps > self.timesteps:
            raise ZooError(
                f"generator.ddim_steps={self.ddim_steps!r} is invalid: expected <= "
                f"generator.timesteps={self.timesteps!r}"
            )
        if self.encoder_hidden % self.heads:
            raise ZooError(
                f"generator.heads={self.heads!r} is invalid: expected a divisor of generator.encoder_hidden="
                f"{self.encoder_hidden!r} (attention splits it into heads)"
            )
