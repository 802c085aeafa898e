"""Zoo architectures, built from a plain spec dict so a store can rebuild any member.

Spec keys: ``name`` (mlp | cnn | resnet | siren | vit | transformer), ``input_shape``, ``num_outputs``,
``width``, ``depth``, ``activation`` and, for cnn, ``batchnorm`` and ``kernel_size``, plus three cnn keys that are
present only when they differ from their default, so every spec written before them rebuilds the same module and layout:
``stride`` (default 1), ``padding`` (``same``, the default: kernel_size // 2 on each side; ``valid``: none, as
Keras' default) and ``dropout`` (true: a :class:`MaskedDropout` after every activation). A resnet likewise adds
``stride`` (the stem conv's, default 1) and ``stages`` (default 1: constant width; more: each later stage doubles
the width and halves the map) only when they differ from their defaults. A siren (an implicit
neural representation: coordinates -> values) adds ``w0`` (the first layer's frequency, 30 as in Sitzmann et al.
2020) and ``w0_hidden`` (the hidden layers', 30 as in their code); its ``activation`` is always ``sine``. The
transformers (:class:`Transformer`: pre-norm blocks over tokens) add ``heads`` and ``mlp_ratio``; ``width`` is the
residual stream and ``depth`` the number of blocks. A vit cuts an image into ``patch`` x ``patch`` patches, a
transformer reads a flat input of ``tokens`` equal one-hot tokens (modular addition: 2 tokens of p). Module
and attribute names are part of the stored layout and of the permutation specs derived from modules, so keep
them stable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}
PADDINGS = ("same", "valid")
ARCHITECTURES = ("mlp", "cnn", "resnet", "siren", "vit", "transformer")
TRANSFORMERS = ("vit", "transformer")


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ZooError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """Flatten, ``depth`` hidden Linear+activation layers of ``width`` units, a Linear head."""

    def __init__(self, in_features: int, num_outputs: int, width: int, depth: int, activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), _activation(activation)]
            d = width
        layers.append(nn.Linear(d, num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class Sine(nn.Module):
    """``sin(w0 * x)``: SIREN's activation. Odd, so flipping a unit's sign in and out preserves the function."""

    def __init__(self, w0: float = 30.0):
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


class SIREN(MLP):
    """A sine network (Sitzmann et al. 2020): ``depth`` hidden Linear+Sine layers of ``width``, a Linear head.

    The same module tree as :class:`MLP` (``layers.{i}``), so the fused population forward, layouts and traced
    permutation specs treat it alike. Initialization (under the global torch RNG, as every family's): first
    layer weights U(-1/in, 1/in), later hidden and head weights U(-sqrt(6/in)/w0_hidden, sqrt(6/in)/w0_hidden),
    biases PyTorch's default U(-1/sqrt(in), 1/sqrt(in)) as in the authors' code.
    """

    def __init__(
        self, in_features: int, num_outputs: int, width: int, depth: int, w0: float = 30.0, w0_hidden: float = 30.0
    ):
        nn.Module.__init__(self)
        layers: list[nn.Module] = []
        d = in_features
        for i in range(depth):
            layers += [nn.Linear(d, width), Sine(w0 if i == 0 else w0_hidden)]
            d = width
        layers.append(nn.Linear(d, num_outputs))
        self.layers = nn.Sequential(*layers)
        with torch.no_grad():
            for i, layer in enumerate(m for m in layers if isinstance(m, nn.Linear)):
                fan_in = layer.weight.shape[1]
                bound = 1.0 / fan_in if i == 0 and depth > 0 else math.sqrt(6.0 / fan_in) / float(w0_hidden)
                layer.weight.uniform_(-bound, bound)


class MaskedDropout(nn.Module):
    """Dropout whose mask comes from outside: the population trainer swaps in each model's own mask.

    A population's models have their own dropout rates and random streams, which one ``nn.Dropout`` inside
    ``vmap`` cannot give (one rate, one global generator), so the trainer draws every model's mask from that
    model's generator (zoo.training.population_module) and hands it in as the non-persistent buffer ``mask``
    (already scaled by 1 / (1 - rate)). The module holds no state of the layout, so a rebuilt model is the
    same network; in eval mode, and while no mask is handed in, it is the identity.
    """

    mask: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask if self.training else x


class CNN(nn.Module):
    """``depth`` conv layers of ``width`` channels (optional BatchNorm, optional per-model dropout after each
    activation), global average pool, Linear head."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        width: int,
        depth: int,
        activation: str = "relu",
        batchnorm: bool = True,
        kernel_size: int = 3,
        stride: int = 1,
        padding: str = "same",
        dropout: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        pad = kernel_size // 2 if padding == "same" else 0
        for _ in range(depth):
            layers.append(nn.Conv2d(c, width, kernel_size, stride=stride, padding=pad, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(_activation(activation))
            if dropout:
                layers.append(MaskedDropout())
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with an identity shortcut: the residual stream keeps ``width`` channels. Given
    ``in_width`` != ``width`` or ``stride`` > 1 (the first block of a later stage), the first conv strides and a
    1x1 conv+BN ``shortcut`` projects the input (He et al. 2016, option B)."""

    def __init__(self, width: int, activation: str = "relu", in_width: int | None = None, stride: int = 1):
        super().__init__()
        c = width if in_width is None else int(in_width)
        self.conv1 = nn.Conv2d(c, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = _activation(activation)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = _activation(activation)
        self.shortcut: nn.Module | None = None
        if c != width or stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(c, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act2(skip + self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """Stem conv+BN (stride ``stride``), ``stages`` stages of ``depth`` basic blocks each, global average pool,
    Linear head. Stage i has ``width * 2**i`` channels; every stage after the first halves the map in its first
    block (stride 2, projection shortcut). One stage at stride 1 is the original constant-width ResNet, module
    for module."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        width: int,
        depth: int,
        activation: str = "relu",
        stride: int = 1,
        stages: int = 1,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            _activation(activation),
        )
        blocks: list[nn.Module] = []
        for stage in range(stages):
            w = width * 2**stage
            for b in range(depth):
                down = stage > 0 and b == 0
                blocks.append(BasicBlock(w, activation, w // 2 if down else w, 2 if down else 1))
        self.blocks = nn.Sequential(*blocks)
        width = width * 2 ** (stages - 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


class SelfAttention(nn.Module):
    """Multi-head self-attention over [..., T, width]: ``heads`` heads of width // heads dims, separate q/k/v/o.

    Written with ``unflatten``/``transpose``/``scaled_dot_product_attention`` so the permutation tracer
    (zoo.rebasin.spec) sees the head split and derives the head-level symmetries from the graph.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = int(heads)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x).unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # [..., H, T, d]
        k = self.k(x).unflatten(-1, (self.heads, -1)).transpose(-3, -2)
        v = self.v(x).unflatten(-1, (self.heads, -1)).transpose(-3, -2)
        a = F.scaled_dot_product_attention(q, k, v)
        return self.o(a.transpose(-3, -2).flatten(-2))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))`` (MLP of mlp_ratio * width)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, activation: str = "gelu"):
        super().__init__()
        hidden = max(1, int(round(mlp_ratio * width)))
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), _activation(activation), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Token embedding (``patch`` > 0: a patch Conv2d over an image, a ViT; else a Linear over ``tokens`` one-hot
    tokens of a flat input), learned positions ``pos`` [T, width] (normal, std 0.02), ``depth`` pre-norm blocks,
    a final LayerNorm, mean over tokens, a Linear head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 2.0,
        activation: str = "gelu",
        patch: int = 0,
        tokens: int = 0,
    ):
        super().__init__()
        self.patch, self.tokens = int(patch), int(tokens)
        if self.patch:
            c, h, w = (int(s) for s in input_shape)
            self.embed: nn.Module = nn.Conv2d(c, width, self.patch, stride=self.patch)
            n_tokens = (h // self.patch) * (w // self.patch)
        else:
            n_in = math.prod(int(s) for s in input_shape)
            self.embed = nn.Linear(n_in // self.tokens, width)
            n_tokens = self.tokens
        self.pos = nn.Parameter(torch.randn(n_tokens, width) * 0.02)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio, activation) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch:
            h = self.embed(x).flatten(-2).transpose(-2, -1)  # [..., T, width]
        else:
            h = self.embed(x.unflatten(-1, (self.tokens, -1)))  # [..., T, vocabulary] -> [..., T, width]
        h = self.blocks(h + self.pos)
        return self.head(self.norm(h).mean(-2))


def arch_spec(
    name: str,
    input_shape: Sequence[int],
    num_outputs: int,
    width: int,
    depth: int,
    activation: str = "relu",
    batchnorm: bool = True,
    kernel_size: int = 3,
    stride: int = 1,
    padding: str = "same",
    dropout: bool = False,
    w0: float = 30.0,
    w0_hidden: float = 30.0,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    patch: int = 2,
    tokens: int = 2,
    stages: int = 1,
) -> dict:
    """Normalized spec dict (only the keys the architecture uses), as stored in layouts. The cnn keys ``stride``,
    ``padding`` and ``dropout`` and the resnet keys ``stride`` (the stem's) and ``stages`` are written only when
    they differ from their defaults (1, same, false, 1), so the specs of zoos built before them are unchanged."""
    spec = {
        "name": name,
        "input_shape": [int(s) for s in input_shape],
        "num_outputs": int(num_outputs),
        "width": int(width),
        "depth": int(depth),
        "activation": "sine" if name == "siren" else activation,
    }
    if name == "siren":
        spec.update(w0=float(w0), w0_hidden=float(w0_hidden))
    if name in TRANSFORMERS:
        spec.update(heads=int(heads), mlp_ratio=float(mlp_ratio))
        spec.update(patch=int(patch)) if name == "vit" else spec.update(tokens=int(tokens))
    if name == "cnn":
        spec.update(batchnorm=bool(batchnorm), kernel_size=int(kernel_size))
        if int(stride) != 1:
            spec["stride"] = int(stride)
        if padding != "same":
            spec["padding"] = str(padding)
        if dropout:
            spec["dropout"] = True
    if name == "resnet":
        if int(stride) != 1:
            spec["stride"] = int(stride)
        if int(stages) != 1:
            spec["stages"] = int(stages)
    return spec


def build_model(spec: Mapping) -> nn.Module:
    """Build the module a spec names; raises ZooError for unknown names or incompatible inputs."""
    name = spec.get("name")
    if name not in ARCHITECTURES:
        raise ZooError(f"unknown architecture {name!r}; choose one of {list(ARCHITECTURES)}")
    shape = list(spec["input_shape"])
    width, depth, act = int(spec["width"]), int(spec["depth"]), spec.get("activation", "relu")
    low = 0 if name in ("mlp", "siren", *TRANSFORMERS) else 1
    if width < 1 or depth < low:
        raise ZooError(f"{name}: width must be >= 1 and depth >= {low}, got {width}, {depth}")
    if name in TRANSFORMERS:
        return _transformer(name, spec, shape, width, depth, act)
    if name in ("mlp", "siren"):
        n_in = 1
        for s in shape:
            n_in *= int(s)
        if name == "siren":
            w0, w0_hidden = float(spec.get("w0", 30.0)), float(spec.get("w0_hidden", 30.0))
            if not (math.isfinite(w0) and math.isfinite(w0_hidden) and w0 > 0 and w0_hidden > 0):
                raise ZooError(f"siren: w0 and w0_hidden must be positive and finite, got {w0}, {w0_hidden}")
            return SIREN(n_in, int(spec["num_outputs"]), width, depth, w0, w0_hidden)
        return MLP(n_in, int(spec["num_outputs"]), width, depth, act)
    if len(shape) != 3:
        raise ZooError(
            f"architecture {name!r} needs image inputs (C, H, W); this dataset gives shape {tuple(shape)}"
            " (use e.g. dataset=digits-image)"
        )
    if name == "cnn":
        k, stride, padding = int(spec.get("kernel_size", 3)), int(spec.get("stride", 1)), spec.get("padding", "same")
        if stride < 1 or padding not in PADDINGS:
            raise ZooError(f"cnn: stride must be >= 1 and padding one of {list(PADDINGS)}, got {stride}, {padding!r}")
        side = min(int(s) for s in shape[1:])
        for layer in range(depth):  # each conv must still see a full kernel: a one-line error, not a torch one
            side = (side + 2 * (k // 2 if padding == "same" else 0) - k) // stride + 1
            if side < 1:
                raise ZooError(
                    f"cnn: a {shape[1]}x{shape[2]} input shrinks to nothing by conv layer {layer + 1} with kernel {k},"
                    f" stride {stride} and {padding} padding; use a smaller stride, same padding or fewer layers"
                )
        return CNN(
            shape[0],
            int(spec["num_outputs"]),
            width,
            depth,
            act,
            bool(spec.get("batchnorm", True)),
            k,
            stride,
            padding,
            bool(spec.get("dropout", False)),
        )
    stride, stages = int(spec.get("stride", 1)), int(spec.get("stages", 1))
    if stride < 1 or stages < 1 or (stages > 1 and depth < 1):
        raise ZooError(f"resnet: stride and stages must be >= 1 (depth >= 1 with stages > 1), got {stride}, {stages}")
    return ResNet(shape[0], int(spec["num_outputs"]), width, depth, act, stride, stages)


def _transformer(name: str, spec: Mapping, shape: list, width: int, depth: int, act: str) -> Transformer:
    """A vit or token transformer from its spec, with one-line errors for shapes that do not fit."""
    heads, ratio = int(spec.get("heads", 4)), float(spec.get("mlp_ratio", 2.0))
    if heads < 1 or width % heads:
        raise ZooError(f"{name}: width {width} must be a positive multiple of heads {heads}")
    if not (math.isfinite(ratio) and ratio > 0):
        raise ZooError(f"{name}: mlp_ratio must be positive, got {ratio}")
    if name == "vit":
        patch = int(spec.get("patch", 2))
        if len(shape) != 3:
            raise ZooError(f"vit needs image inputs (C, H, W); this dataset gives shape {tuple(shape)}")
        if patch < 1 or shape[1] % patch or shape[2] % patch:
            raise ZooError(f"vit: patch {patch} must divide the {shape[1]}x{shape[2]} image")
        return Transformer(shape, int(spec["num_outputs"]), width, depth, heads, ratio, act, patch=patch)
    tokens = int(spec.get("tokens", 2))
    if len(shape) != 1 or tokens < 1 or shape[0] % tokens:
        raise ZooError(
            f"transformer reads a flat input of {tokens} equal one-hot tokens; this dataset gives shape {tuple(shape)}"
        )
    return Transformer(shape, int(spec["num_outputs"]), width, depth, heads, ratio, act, tokens=tokens)
