"""D2NWG: latent diffusion over (re-based) weights, conditioned on a dataset embedded from a few examples.

Coordinates: trainable parameters w [n, P] (raw by default, ``canonical``: within one seed the zoo's models
share their init, so raw weights are ~linear in the task; ``generators.training_models``) standardized per
coordinate with training statistics, cut into T tokens of ``chunk_size`` (zero-padded), compressed by a
token-wise VAE (linear maps started at PCA, optionally plus a residual MLP; one token when the net is small)
into a latent [n, T * latent_per_chunk], standardized per dimension. The VAE is fitted once in
``from_data`` (a fixed coordinate system for the diffusion, like DeepWeightFlow's PCA). The Lightning
module then trains, jointly, the dataset encoder (``dataset_encoder.py``) and a residual-MLP
denoiser over the latents (eps-prediction under diffusers' ``DDPMScheduler``, linear betas as published,
``clip_sample=False``; condition dropout for classifier-free guidance). Besides the dataset, the denoiser
sees a discrete "mode" (``mode_column``, default the zoo's seed: models of one seed share their
initialization across tasks, so each mode is a nearly linear family in the task); sampling draws it
uniformly with the seed. Sampling runs diffusers' ``DDIMScheduler`` for ``ddim_steps`` steps, then the VAE
decoder.

The networks live beside this module: ``vae.py`` (``WeightVAE``), ``denoiser.py`` (``Denoiser`` and the
diffusers schedulers), ``dataset_encoder.py`` (the Set Transformer over support sets).

Tasks are split, not models: ``val_fraction`` of the zoo's datasets (all their models) is held out for
early stopping on the samples' TRAINING-split accuracy on those unseen tasks; no test split is read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from generators.base import Generator
from generators.d2nwg.dataset_encoder import ClassPools, DatasetEncoder, check_task, support_set
from generators.d2nwg.denoiser import Denoiser, _schedulers
from generators.d2nwg.vae import WeightVAE
from generators.training_models import TrainingModels
from zoo.app.runtime import THREADS
from zoo.errors import ZooError


# ---------------------------------------------------------------------------------------------- conditions
@dataclass
class DatasetCondition:
    """What to condition on: a dataset (a name, a .npz path or a loaded one) and the shots per class."""

    dataset: Any
    shots: int | None = None

    def __str__(self) -> str:
        name = self.dataset.key if isinstance(self.dataset, zoo.Dataset) else self.dataset
        return f"{name}" + (f" ({self.shots} shots)" if self.shots is not None else "")


def task_split(tasks: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of task names into (train, val); at least one of each."""
    if not 0 < val_fraction < 1:
        raise ZooError(f"generator.val_fraction must be in (0, 1), got {val_fraction}")
    if len(tasks) < 2:
        raise ZooError(
            f"d2nwg learns across datasets: the zoo's selected models span {len(tasks)} dataset(s); "
            "it needs at least 2 (a multi-dataset zoo, e.g. recipe=d2nwg-digits)"
        )
    perm = np.random.default_rng(seed).permutation(sorted(tasks))
    n_val = min(max(1, int(round(val_fraction * len(tasks)))), len(tasks) - 1)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


class D2NWG(Generator):
    """Dataset-conditioned latent diffusion over weights: VAE + DDPM/DDIM + Set Transformer dataset encoder."""

    name = "d2nwg"
    conditions_on_dataset = True
    # its validation samples are for held-out TASKS, whose models it never saw: copying a training task's model
    # does not score there, so their training-split accuracy is a selection that does not reward copying
    default_monitor = "val/sample_train_acc"

    def __init__(self, config: dict, origin: dict, dims: dict):
        super().__init__(config, origin, dims)
        c = config
        p, lat = int(dims["params"]), int(dims["latent"])
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("scale", torch.ones(p))
        self.register_buffer("latent_mean", torch.zeros(lat))
        self.register_buffer("latent_std", torch.ones(lat))
        self.vae = WeightVAE(p, int(dims["chunk"]), int(c["latent_per_chunk"]), int(c["vae_hidden"]))
        self.vae.requires_grad_(False)
        self.encoder = DatasetEncoder(
            int(dims["features"]),
            int(dims["classes"]),
            hidden=int(c["encoder_hidden"]),
            embed_dim=int(c["embed_dim"]),
            heads=int(c["heads"]),
            inducing=int(c["inducing_points"]),
        )
        self.modes = nn.Embedding(len(origin.get("modes", {}).get("values", [0])), int(c["embed_dim"]))
        nn.init.zeros_(self.modes.weight)
        n_modes = self.modes.num_embeddings  # one linear map per mode: within a mode weights are ~linear in the task
        self.mean_head = nn.Linear(int(c["embed_dim"]), lat * n_modes) if c.get("residual") else None
        self.null_cond = nn.Parameter(torch.zeros(int(c["embed_dim"])))  # the "no dataset" input of guidance
        self.denoiser = Denoiser(
            lat, int(c["embed_dim"]), int(c["hidden"]), int(c["blocks"]), int(c["time_dim"]), float(c["dropout"])
        )
        self.ddpm, self.ddim = _schedulers(c)
        self._pools: ClassPools | None = None  # training examples of the zoo's tasks (fit only; not saved)
        self._task_data: list[zoo.Dataset] | None = None
        self._embedding: torch.Tensor | None = None  # [1, E] of the dataset being sampled for

    # ------------------------------------------------------------------ data
    @classmethod
    def load_training_models(cls, zoo_path: str, cfg: Mapping, seed: int = 0) -> TrainingModels:
        """The zoo's models (canonical, see ``generators.training_models``) re-split by TASK: every model of a
        validation task is held out; condition index = position of the model's dataset in ``tasks``."""
        src = super().load_training_models(zoo_path, {**cfg, "condition": None}, seed)
        info = dict(src.info)
        ids = np.asarray(info["train_ids"] + info["val_ids"], dtype=np.int64)
        weights = torch.cat([src.train, src.val])
        models = zoo.open(zoo_path).models.set_index("model_id")
        if "dataset" not in models:
            raise ZooError("the zoo's models table has no dataset column; d2nwg needs a multi-dataset zoo")
        names = models.loc[ids, "dataset"].astype(str).to_numpy()
        train_tasks, val_tasks = task_split(sorted(set(names)), float(cfg.get("val_fraction", 0.1)), seed)
        tasks = train_tasks + val_tasks
        index = {t: i for i, t in enumerate(tasks)}
        cond = torch.as_tensor([index[n] for n in names], dtype=torch.int64)
        column = cfg.get("mode_column")
        if column:  # a discrete latent: which of the zoo's initializations (seed) a model comes from
            if column not in models:
                raise ZooError(f"generator.mode_column {column!r} is not a models-table column")
            values = sorted(models.loc[ids, column].unique().tolist())
            mode_index = {v: i for i, v in enumerate(values)}
            modes = torch.as_tensor([mode_index[v] for v in models.loc[ids, column]], dtype=torch.int64)
            info["modes"] = {"column": column, "values": [v.item() if hasattr(v, "item") else v for v in values]}
        else:
            modes = torch.zeros(len(ids), dtype=torch.int64)
            info["modes"] = {"column": None, "values": [0]}
        cond = torch.stack([cond, modes], dim=1)  # [n, 2]: (task index, mode index)
        is_train = torch.as_tensor(np.isin(names, train_tasks))
        order_tr, order_va = torch.nonzero(is_train)[:, 0], torch.nonzero(~is_train)[:, 0]
        info.update(
            train_ids=ids[order_tr.numpy()].tolist(),
            val_ids=ids[order_va.numpy()].tolist(),
            train_tasks=train_tasks,
            val_tasks=val_tasks,
            condition={
                "column": "dataset",
                "values": tasks,
                "counts": torch.bincount(cond[order_tr, 0], minlength=len(tasks)).tolist(),
            },
        )
        shared = {k: v for k, v in src.shared.items() if k != "dataset"}
        return TrainingModels(
            info,
            src.layout,
            weights[order_tr].contiguous(),
            weights[order_va].contiguous(),
            cond[order_tr],
            cond[order_va],
            shared,
        )

    @classmethod
    def from_data(cls, config: dict, origin: dict, train: torch.Tensor, buffers: torch.Tensor) -> D2NWG:
        """Standardize the training parameters [n, P], fit the VAE on them, load the tasks' training examples."""
        store = zoo.open(origin["zoo"])
        tasks = list(origin["condition"]["values"])
        data = [store.dataset(t) for t in tasks]
        layout = zoo.Layout.from_json(origin["layout"])
        classes = int(layout.build()(torch.zeros(1, *data[0].input_shape)).shape[-1])
        n, p = train.shape
        chunk = int(config["chunk_size"])
        if chunk <= 0 or chunk >= p:
            chunk = p
        dims = {
            "params": p,
            "chunk": chunk,
            "tokens": math.ceil(p / chunk),
            "latent": math.ceil(p / chunk) * int(config["latent_per_chunk"]),
            "features": int(np.prod(data[0].input_shape)),
            "input_shape": list(data[0].input_shape),
            "classes": classes,
        }
        g = cls(config, origin, dims)
        mean, scale = train.mean(0), train.std(0, unbiased=n > 1)
        scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
        g.mean.copy_(mean)
        g.scale.copy_(scale)
        g.buffer_fill.copy_(buffers)
        for d in data:
            check_task(d, dims["features"], classes, int(config["shots"]), tuple(dims["input_shape"]))
        g.fit_vae((train - mean) / scale)
        g._task_data, g._pools = data, ClassPools(data, classes)
        return g

    def fit_vae(self, x: torch.Tensor) -> None:
        """Train the VAE on standardized weights [n, P] (seeded by the global RNG), then set the latent statistics."""
        c = self.config
        self.vae.init_pca(x)
        vae = self.vae.requires_grad_(True).train()
        opt = torch.optim.AdamW(vae.parameters(), lr=float(c["vae_lr"]), weight_decay=float(c["vae_weight_decay"]))
        steps, bs = int(c["vae_steps"]), int(c["vae_batch_size"])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=float(c["vae_lr"]), total_steps=max(steps, 1), pct_start=0.05
        )
        for _ in range(steps):
            xb = x[torch.randint(0, len(x), (min(bs, len(x)),))]
            mu, logvar = vae.encode(xb + float(c["vae_input_noise"]) * torch.randn_like(xb))
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            z = z + float(c["vae_latent_noise"]) * torch.randn_like(z)
            rec = F.mse_loss(vae.decode(z), xb)
            kl = -0.5 * torch.mean(1 + logvar - mu.square() - logvar.exp())
            loss = rec + float(c["kl_weight"]) * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        vae.requires_grad_(False).eval()
        with torch.no_grad():
            mu = vae.encode(x)[0]
            self.latent_mean.copy_(mu.mean(0))
            self.latent_std.copy_(mu.std(0).clamp_min(1e-4))
            self.dims["vae_rmse"] = float(F.mse_loss(vae.decode(mu), x).sqrt())

    def encode(self, params: torch.Tensor) -> torch.Tensor:
        """Parameters [n, P] -> standardized coordinates [n, P] (the loaders' targets; latents come per step)."""
        return (params - self.mean) / self.scale

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Standardized weights [n, P] -> standardized latent means [n, D]."""
        return (self.vae.encode(x)[0] - self.latent_mean) / self.latent_std

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Standardized latents [n, D] -> parameters [n, P]."""
        return self.vae.decode(z * self.latent_std + self.latent_mean) * self.scale + self.mean

    # ------------------------------------------------------------------ Lightning
    def train(self, mode: bool = True) -> D2NWG:
        super().train(mode)
        self.vae.eval()  # fixed coordinates: never in training mode
        return self

    def _diffusion_loss(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        generator: torch.Generator | None = None,
        drop: float = 0.0,
        augment: bool = False,
    ) -> torch.Tensor:
        """eps-MSE (+ the regression head's MSE) of latents of standardized weights x [n, P] for conditions
        [n, 2] (task, mode); ``augment``: relabel some tasks (``label_permutation``)."""
        tasks, modes = cond[:, 0], cond[:, 1]
        dev = x.device  # every tensor below lives there; the random draws are made on the CPU (same bits anywhere)
        support = self._pools_on(dev).draw(tasks, int(self.config["shots"]), generator)
        if augment:
            x, support = self._permute_labels(x, support, generator)
        with torch.no_grad():
            z0 = self.to_latent(x)
        emb = self.encoder(support)
        m = self.modes(modes)
        mean_loss = torch.zeros((), device=dev)
        if self.mean_head is not None:  # regression of the latent, then diffusion of what it leaves
            mu = self.regress(emb, modes)
            mean_loss = F.mse_loss(mu, z0)
            z0 = z0 - mu.detach()
        if drop > 0:
            keep = (torch.rand(len(emb), 1, generator=generator) >= drop).to(dev)
            emb = torch.where(keep, emb, self.null_cond.expand_as(emb))
        emb = emb + m
        noise = torch.randn(z0.shape, generator=generator).to(dev)
        t = torch.randint(0, self.ddpm.config.num_train_timesteps, (len(z0),), generator=generator).to(dev)
        zt = self.ddpm.add_noise(z0, noise, t)
        return F.mse_loss(self.denoiser(zt, t, emb), noise) + float(self.config["mean_weight"]) * mean_loss

    def _pools_on(self, device: torch.device) -> ClassPools:
        """The tasks' training examples on ``device`` (moved there once, when the module has moved)."""
        if self._pools is None:
            raise ZooError("d2nwg's training examples are loaded by fitting (generators.fit), not by load")
        self._pools = self._pools.to(device)
        return self._pools

    def _head_rows(self) -> list[torch.Tensor]:
        """Per classifier-head tensor, [C, r] positions of its output units' values in the parameter vector."""
        pos = torch.cumsum(self.param_mask.long(), 0) - 1
        params = [e for e in self.layout.entries if e.kind == "parameter"]
        c = int(self.dims["classes"])
        head = [e for e in params[-2:] if e.shape and e.shape[0] == c]
        return [pos[torch.arange(e.offset, e.stop, device=pos.device).reshape(c, -1)] for e in head]

    def _permute_labels(
        self, x: torch.Tensor, support: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmentation: with probability ``label_permutation`` a task's labels are shuffled, its support sets
        [n, C, S, F] and its classifier's output units (last layer rows) alike; the net computes the same
        function up to that relabeling, so (relabeled examples, permuted weights) is a true pair."""
        p = float(self.config.get("label_permutation", 0.0))
        if p <= 0:
            return x, support
        n, c, dev = x.shape[0], support.shape[1], x.device
        perm = torch.argsort(torch.rand(n, c, generator=generator), dim=1)  # CPU draws: the same bits on any device
        keep = torch.rand(n, generator=generator) >= p
        perm[keep] = torch.arange(c)
        perm, rows = perm.to(dev), torch.arange(n, device=dev)[:, None]
        raw = x * self.scale + self.mean
        for idx in self._head_rows():
            raw[:, idx] = raw[:, idx][rows, perm]  # new unit k = old unit perm[k]
        return (raw - self.mean) / self.scale, support[rows, perm]

    def regress(self, emb: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
        """The regression head's latent [n, D] for dataset embeddings [n, E] and modes [n]."""
        out = self.mean_head(emb).reshape(len(emb), self.modes.num_embeddings, -1)
        return out[torch.arange(len(emb), device=out.device), modes]

    # ------------------------------------------------------------------ fitting (generators.lit wraps these)
    def training_loss(self, batch):
        x, tasks = batch
        return self._diffusion_loss(x, tasks, drop=float(self.config["cond_dropout"]), augment=True)

    def validation_loss(self, batch, batch_idx):
        x, tasks = batch
        gen = torch.Generator().manual_seed(1000 + batch_idx)  # the same draws every epoch: comparable losses
        reps = 8
        loss = self._diffusion_loss(x.repeat(reps, 1), tasks.repeat(reps, 1), gen)
        return loss, x.shape[0] * reps

    def validation_metrics(self) -> dict[str, Any]:
        """The mean TRAINING-split accuracy of samples for the validation tasks (never seen in training)."""
        k = int(self.config.get("val_samples", 0))
        if k <= 0 or self._pools is None:
            return {}
        tasks = list(self.origin["val_tasks"])
        per = max(1, k // len(tasks))
        offset = len(self.origin["train_tasks"])
        gen = torch.Generator().manual_seed(0)
        was = self.training
        self.eval()
        with torch.no_grad():
            idx = torch.arange(offset, offset + len(tasks), device=self.device)
            emb = self.encoder(self._pools_on(self.device).draw(idx, int(self.config["shots"]), gen))
            flat = self.full_weights(
                self.generate_from(
                    emb.repeat_interleave(per, 0), gen, torch.arange(len(tasks) * per) % self.modes.num_embeddings
                )
            )
        flat = flat.cpu()  # scored on the CPU: accuracies are host numbers, and these validation nets are small
        self.train(was)
        accs = []
        for j in range(len(tasks)):
            w = flat[j * per : (j + 1) * per]
            ok = torch.isfinite(w).all(1)
            a = torch.zeros(per, dtype=torch.float64)
            if ok.any():
                a[ok] = zoo.evaluate(self.layout, w[ok], self._task_data[offset + j], split="train")["acc"]
            accs.append(float(a.mean()))
        return {"val/sample_train_acc": float(np.mean(accs))}

    def optimizers(self, total_steps):
        c = self.config
        params = [p for n, p in self.named_parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            params, lr=float(c["lr"]), weight_decay=float(c["weight_decay"]), betas=tuple(float(b) for b in c["betas"])
        )
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=float(c["lr"]), total_steps=max(int(total_steps), 1), pct_start=0.02, anneal_strategy="cos"
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ sampling
    def dataset_condition(self, dataset: Any, shots: int | None = None) -> DatasetCondition:
        """A condition for ``sample``/``sample_zoo``: a dataset name, .npz path or zoo.Dataset, ``shots`` per class."""
        return DatasetCondition(dataset, shots)

    def resolve_dataset(self, dataset: Any) -> zoo.Dataset:
        """A loaded dataset: names reload with the zoo's task seed; .npz paths as written."""
        if isinstance(dataset, zoo.Dataset):
            return dataset
        if not isinstance(dataset, str) or not dataset:
            raise ZooError(f"give a dataset name or a .npz path to condition on, got {dataset!r}")
        return zoo.load_dataset(dataset, seed=int(self.origin["dataset"]["seed"]))

    def embed(self, dataset: zoo.Dataset, shots: int, generator: torch.Generator) -> torch.Tensor:
        """[1, E] embedding of a dataset from ``shots`` training examples per class drawn with ``generator``."""
        d = self.dims
        check_task(dataset, int(d["features"]), int(d["classes"]), shots, tuple(d["input_shape"]))
        with torch.no_grad():  # the support set is drawn on the CPU (same bits anywhere), then moved to the encoder
            return self.encoder(support_set(dataset, int(d["classes"]), shots, generator).to(self.device))

    def _condition_index(self, n: int, condition: Any, generator: torch.Generator) -> tuple[None, list]:
        """Resolve the dataset, draw its support set with the sampling seed, keep its embedding for ``generate``."""
        if condition is None:
            raise ZooError(
                "d2nwg generates weights for a dataset: give one (zoo sample --dataset NAME|file.npz, or "
                "condition=g.dataset_condition(name, shots))"
            )
        cond = condition if isinstance(condition, DatasetCondition) else DatasetCondition(condition)
        shots = int(self.config["shots"]) if cond.shots is None else cond.shots
        if not isinstance(shots, (int, np.integer)) or isinstance(shots, bool) or shots < 1:
            raise ZooError(f"shots must be a positive integer (examples per class), got {shots!r}")
        data = self.resolve_dataset(cond.dataset)
        self._embedding = self.embed(data, int(shots), generator)
        self._data = data
        return None, [data.key] * n  # the name the sample zoo records (a .npz: its path)

    def generate(self, n: int, generator: torch.Generator, condition: torch.Tensor | None) -> torch.Tensor:
        """[n, P] parameters for the dataset ``_condition_index`` resolved (DDIM from n Gaussian latents)."""
        if self._embedding is None:
            raise ZooError("no dataset to generate for (sample through sample/sample_zoo with a dataset condition)")
        modes = torch.randint(0, self.modes.num_embeddings, (n,), generator=generator)  # on the CPU: same draws
        return self.generate_from(self._embedding.to(self.device).expand(n, -1), generator, modes)

    def generate_from(self, emb: torch.Tensor, generator: torch.Generator, modes: torch.Tensor) -> torch.Tensor:
        """[n, P] parameters for dataset embeddings emb [n, E] and modes [n]: DDIM in the latent, classifier-free
        guidance."""
        n, w = emb.shape[0], float(self.config["guidance"])
        z = torch.randn(n, int(self.dims["latent"]), generator=generator).to(emb.device)  # CPU draws, then moved
        modes = modes.to(emb.device)
        m = self.modes(modes)
        mu = self.regress(emb, modes) if self.mean_head is not None else 0.0
        null, emb = self.null_cond.expand_as(emb) + m, emb + m
        for t in self.ddim.timesteps:
            tt = torch.full((n,), int(t), dtype=torch.int64, device=z.device)
            if w == 1.0:
                eps = self.denoiser(z, tt, emb)
            else:
                e = self.denoiser(torch.cat([z, z]), torch.cat([tt, tt]), torch.cat([emb, null]))
                eps = e[n:] + w * (e[:n] - e[n:])
            z = self.ddim.step(eps, int(t), z).prev_sample
        tau = float(self.config.get("residual_temperature", 1.0)) if self.mean_head is not None else 1.0
        return self.decode_latent(mu + tau * z)

    def full_weights(self, params: torch.Tensor) -> torch.Tensor:
        """[n, P_params] -> [n, P] flat weights in the zoo's layout (buffers from the training mean)."""
        flat = self.buffer_fill.expand(params.shape[0], -1).clone()
        flat[:, self.param_mask] = params.to(flat.dtype)
        return flat

    def sample_zoo(
        self,
        n: int,
        out,
        seed: int = 0,
        condition: Any = None,
        overwrite: bool = False,
        threads: int | None = THREADS,
        metrics: Sequence[str] = ("train", "test"),
        device: str | torch.device = "cpu",
    ) -> zoo.Zoo:
        """n samples for one dataset written as a zoo evaluated on that dataset (its name in ``dataset``), the
        sampling network and the scoring on ``device``."""
        if isinstance(condition, zoo.Dataset):
            condition = DatasetCondition(condition)
        return super().sample_zoo(
            n,
            out,
            seed=seed,
            condition=condition,
            overwrite=overwrite,
            threads=threads,
            metrics=metrics,
            device=device,
        )
