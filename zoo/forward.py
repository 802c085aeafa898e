"""Many models of one layout at once: the stacked forward that population training and ``zoo.evaluate`` share.

Parameters and buffers are stacked ``[M, *shape]`` tensors. MLPs run as fused batched GEMMs; plain CNNs
(zoo.arch.CNN) as grouped convolutions over the models' stacked channels (``groups = M``) in channels-last
memory (NCHW with BatchNorm); transformers (zoo.arch.Transformer) as batched GEMMs with attention
(``scaled_dot_product_attention``'s math path) over [M, b, heads, tokens, d] (vmap has no batching rule for CPU
attention and loops over models); ResNets (zoo.arch.ResNet) as grouped convolutions on NCHW memory, except wider
ones on CPU without gradients (evaluation, BatchNorm recalibration): one model at a time on channels-last
activations; SIREN training steps with a fused sine (``_Sine``); every other architecture is ``torch.func.vmap``
over ``functional_call`` of a template module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call, vmap

from zoo.arch import CNN, MLP, BasicBlock, Block, MaskedDropout, ResNet, Sine, Transformer


class _Sine(torch.autograd.Function):
    """``sin(w0 * z)`` for a training step, with fewer buffers than autograd's mul + sin: the backward computes
    ``g * cos(w0 z) * w0`` in place in the saved ``w0 z``. The very bits of ``torch.sin(w0 * z)`` and its
    autograd gradient (tested); once differentiable (training steps take no second derivative)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, z: torch.Tensor, w0: float) -> torch.Tensor:  # type: ignore[override]
        a = z * w0
        ctx.save_for_backward(a)
        ctx.w0 = w0  # type: ignore[attr-defined]
        return torch.sin(a)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (a,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return a.cos_().mul_(g).mul_(ctx.w0), None  # type: ignore[attr-defined]


def stacked_mlp_forward(
    template: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    shared_input: bool,
    feature_major: bool = False,
) -> torch.Tensor:
    """The zoo MLP for M models at once with fused batched GEMMs: x [M, b, ...] or shared [b, ...] -> [M, b, K].

    Same function as ``template`` with each model's parameters (tested). ``feature_major`` computes
    ``h <- W h + b`` on [M, features, b] activations: every weight gradient then comes out in the
    parameter's own [out, in] layout (no transposed copy per layer) and the output is a view whose
    transpose is the loss's [M, K, b]; 1.6x faster for training steps. Batch-major, the default, sums in
    the order ``nn.Linear`` does, so stored evaluation metrics match ``Zoo.module`` exactly.
    """
    m = next(iter(params.values())).shape[0]
    h = x.flatten(1) if shared_input else x.flatten(2)
    if shared_input:
        h = h.expand(m, *h.shape)
    if feature_major:
        h = h.transpose(1, 2)
    layers: nn.ModuleList = template.layers  # type: ignore[assignment]  # the template is a zoo.arch.MLP
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            h = (
                torch.baddbmm(b.unsqueeze(-1), w, h)
                if feature_major
                else torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            )
        elif feature_major and isinstance(layer, Sine) and torch.is_grad_enabled():  # a SIREN's training step
            h = _Sine.apply(h, layer.w0)
        else:
            h = layer(h)  # elementwise activation
    return h.transpose(1, 2) if feature_major else h


def grouped_cnn_supported(template: nn.Module) -> bool:
    """Whether ``stacked_cnn_forward`` computes ``template``'s function: a zoo CNN whose BatchNorms (if any) keep
    running statistics with a momentum (``momentum=None``, the cumulative average, is left to vmap)."""
    if type(template) is not CNN:
        return False
    return all(
        m.track_running_stats and m.momentum is not None and m.affine
        for m in template.features
        if isinstance(m, nn.BatchNorm2d)
    )


def _to_grouped(t: torch.Tensor, m: int, channels_last: bool = True) -> torch.Tensor:
    """[M, b, C, H, W] -> [b, M*C, H, W] in channels-last (or NCHW) memory (one copy): model j's channels are
    j*C..j*C+C-1."""
    _, b, c, h, w = t.shape
    if not channels_last:
        return t.transpose(0, 1).reshape(b, m * c, h, w)
    return t.permute(1, 3, 4, 0, 2).contiguous().view(b, h, w, m * c).permute(0, 3, 1, 2)


def stacked_cnn_forward(
    template: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    shared_input: bool,
) -> torch.Tensor:
    """The zoo CNN for M models at once as grouped convolutions: x [M, b, C, H, W] or shared [b, C, H, W] ->
    [M, b, K].

    The population is one network of M*width channels: model j owns channels j*width..(j+1)*width-1 of every
    layer, each conv has ``groups = M`` (a shared input's first conv is one dense conv with M*width outputs),
    BatchNorm normalizes each channel by its own batch statistics (exactly one model's channel) and updates
    the stacked running statistics in place, and per-model dropout masks [M, b, C, H, W] (``<site>.mask``
    in ``buffers``) multiply in training mode. Activations are channels-last: oneDNN's grouped convolution
    runs ~1.4x faster on them than on NCHW for these 16-channel groups (docs/profile-population.md); with
    BatchNorm they stay NCHW (BatchNorm's accurate kernel is NCHW's; docs/profile-population-bn.md). The
    same function as vmap over the template, up to float32 rounding of the convolutions' sums (tested).
    """
    m = next(iter(params.values())).shape[0]
    # BatchNorm CNNs stay in NCHW memory throughout: BatchNorm runs on NCHW (below), and converting around it
    # cost more than the channels-last convolutions gain (NCHW throughout: 1.33x per step, 1.27x per evaluation)
    cl = not any(isinstance(layer, nn.BatchNorm2d) for layer in template.modules())
    fmt = torch.channels_last if cl else torch.contiguous_format
    if shared_input and not cl:
        h = x.contiguous()
    elif shared_input:  # explicit channels-last strides: a 1-channel NCHW tensor also passes as channels-last, and
        # the conv would then write its M*width-channel output in NCHW (a copy of it cost 27% of an evaluation)
        h = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last).copy_(x)
    else:
        h = _to_grouped(x, m, cl)
    first = True
    feats: nn.Sequential = template.features  # type: ignore[assignment]  # the template is a zoo.arch.CNN
    for i, layer in enumerate(feats):
        name = f"features.{i}"
        if isinstance(layer, nn.Conv2d):
            w = params[f"{name}.weight"]
            bias = params.get(f"{name}.bias")
            dense = first and shared_input  # every model reads the same input: one conv, no groups
            h = F.conv2d(
                h,
                w.reshape(m * w.shape[1], *w.shape[2:]),
                None if bias is None else bias.reshape(-1),
                stride=layer.stride,
                padding=layer.padding,
                groups=1 if dense else m,
            )
            if first:  # a 1-channel input is ambiguous to the kernels' layout choice: make the output's explicit
                h = h.contiguous(memory_format=fmt)
            first = False
        elif isinstance(layer, nn.BatchNorm2d):
            mean, var = buffers[f"{name}.running_mean"], buffers[f"{name}.running_var"]
            if layer.training:
                buffers[f"{name}.num_batches_tracked"].add_(1)
            # on NCHW memory: the channels-last kernel's batch variance is ~15x less accurate in float32 when a
            # channel's mean is large against its spread (measured; it moved trained weights by 2e-5 in a test)
            h = F.batch_norm(
                h.contiguous(),
                mean.view(-1),  # views of the stacked buffers: the update lands in them
                var.view(-1),
                params[f"{name}.weight"].reshape(-1),
                params[f"{name}.bias"].reshape(-1),
                training=layer.training,
                momentum=float(layer.momentum),  # type: ignore[arg-type]  # checked not None
                eps=layer.eps,
            ).contiguous(memory_format=fmt)
        elif isinstance(layer, MaskedDropout):
            mask = buffers.get(f"{name}.mask")
            if layer.training and mask is not None:  # no mask handed in: the identity, as the module's own
                h = h * _to_grouped(mask, m, cl)
        else:
            h = layer(h)  # elementwise activation
    b = h.shape[0]
    pooled = h.mean((2, 3)).view(b, m, -1).transpose(0, 1)  # [M, b, width]
    w, bias = params["head.weight"], params["head.bias"]
    return torch.baddbmm(bias.unsqueeze(1), pooled, w.transpose(1, 2))


def grouped_resnet_supported(template: nn.Module) -> bool:
    """Whether ``stacked_resnet_forward`` computes ``template``'s function: a zoo ResNet whose BatchNorms keep
    running statistics with a momentum."""
    return type(template) is ResNet and all(
        m.track_running_stats and m.momentum is not None and m.affine
        for m in template.modules()
        if isinstance(m, nn.BatchNorm2d)
    )


def stacked_resnet_forward(
    template: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    shared_input: bool,
) -> torch.Tensor:
    """The zoo ResNet for M models at once as grouped convolutions on NCHW memory: x [M, b, C, H, W] or shared
    [b, C, H, W] -> [M, b, K]. As ``stacked_cnn_forward``: model j owns channels j*width..(j+1)*width-1 of every
    layer, every conv (the 1x1 projection shortcuts too) has ``groups = M`` (a shared input's stem conv is one
    dense conv), BatchNorm over the M*width channels is each model's own BatchNorm (affine and running
    statistics in place in the stacked buffers). The same function as vmap over the template up to float32
    rounding of the convolutions' sums (tested)."""
    m = next(iter(params.values())).shape[0]

    def conv(name: str, layer: Any, h: torch.Tensor, dense: bool = False) -> torch.Tensor:  # layer: nn.Conv2d
        w = params[f"{name}.weight"]
        return F.conv2d(
            h,
            w.reshape(m * w.shape[1], *w.shape[2:]),
            None,
            stride=layer.stride,
            padding=layer.padding,
            groups=1 if dense else m,
        ).contiguous()  # a 1-channel input is ambiguous to the kernels' layout choice: NCHW throughout

    def bn(name: str, layer: Any, h: torch.Tensor) -> torch.Tensor:  # layer: nn.BatchNorm2d
        if layer.training:
            buffers[f"{name}.num_batches_tracked"].add_(1)
        return F.batch_norm(
            h,
            buffers[f"{name}.running_mean"].view(-1),  # views of the stacked buffers: the update lands in them
            buffers[f"{name}.running_var"].view(-1),
            params[f"{name}.weight"].reshape(-1),
            params[f"{name}.bias"].reshape(-1),
            training=layer.training,
            momentum=float(layer.momentum),  # checked not None
            eps=layer.eps,
        )

    r: ResNet = template  # type: ignore[assignment]
    h = x.contiguous() if shared_input else x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
    stem_conv, stem_bn, stem_act = r.stem
    h = stem_act(bn("stem.1", stem_bn, conv("stem.0", stem_conv, h, dense=shared_input)))
    for i, block in enumerate(r.blocks):
        assert isinstance(block, BasicBlock)
        pre = f"blocks.{i}."
        if block.shortcut is None:
            skip = h
        else:
            sc_conv, sc_bn = cast(nn.Sequential, block.shortcut)
            skip = bn(pre + "shortcut.1", sc_bn, conv(pre + "shortcut.0", sc_conv, h))
        y = block.act1(bn(pre + "bn1", block.bn1, conv(pre + "conv1", block.conv1, h)))
        h = block.act2(skip + bn(pre + "bn2", block.bn2, conv(pre + "conv2", block.conv2, y)))
    b = h.shape[0]
    pooled = h.mean((2, 3)).view(b, m, -1).transpose(0, 1)  # [M, b, width]
    w, bias = params["head.weight"], params["head.bias"]
    return torch.baddbmm(bias.unsqueeze(1), pooled, w.transpose(1, 2))


def _stacked_linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h [M, ..., in] through M Linear layers w [M, out, in], b [M, out] -> [M, ..., out]."""
    m = h.shape[0]
    out = torch.baddbmm(b.unsqueeze(1), h.reshape(m, -1, h.shape[-1]), w.transpose(1, 2))
    return out.view(*h.shape[:-1], w.shape[1])


def _stacked_layer_norm(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis of h [M, ..., D] with each model's own weight and bias [M, D]."""
    view = (h.shape[0],) + (1,) * (h.dim() - 2) + (h.shape[-1],)
    return torch.addcmul(b.view(view), F.layer_norm(h, h.shape[-1:], eps=eps), w.view(view))


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [..., heads, T, d]: the arithmetic of ``scaled_dot_product_attention``'s math
    path (the one it takes for these 5-D population tensors; bit for bit, tested) without its all-masked-row check
    (``isneginf``/``all``/``where`` over every score: 18% of a vit population step, and no row is masked here)."""
    s = math.sqrt(1.0 / math.sqrt(q.shape[-1]))  # the math path scales q and k by the square root of the scale
    return torch.matmul(torch.matmul(q * s, (k * s).transpose(-2, -1)).softmax(-1), v)


def stacked_transformer_forward(
    template: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, shared_input: bool
) -> torch.Tensor:
    """The zoo transformer (zoo.arch.Transformer) for M models at once: x [M, b, ...] or shared [b, ...] ->
    [M, b, K]. Linear layers are batched GEMMs, the patch embedding a patchify and a GEMM, attention the
    arithmetic of ``scaled_dot_product_attention``'s math path over [M, b, heads, tokens, d] (``_attention``); the
    same function as the template with each model's parameters up to float32 rounding (tested)."""
    t: Transformer = template  # type: ignore[assignment]
    m = next(iter(params.values())).shape[0]
    if shared_input:
        x = x.expand(m, *x.shape)
    w_e, b_e = params["embed.weight"], params["embed.bias"]
    if t.patch:
        p = t.patch
        mm, b, c, hh, ww = x.shape
        patches = x.reshape(mm, b, c, hh // p, p, ww // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        patches = patches.reshape(mm, b, (hh // p) * (ww // p), c * p * p)
        h = _stacked_linear(patches, w_e.reshape(m, w_e.shape[1], -1), b_e)
    else:
        h = _stacked_linear(x.unflatten(-1, (t.tokens, -1)), w_e, b_e)
    h = h + params["pos"].unsqueeze(1)  # [M, b, T, D]
    blocks: nn.Sequential = t.blocks
    for i, block in enumerate(blocks):
        assert isinstance(block, Block)
        pre, attn = f"blocks.{i}.", block.attn
        a = _stacked_layer_norm(h, params[pre + "ln1.weight"], params[pre + "ln1.bias"], block.ln1.eps)
        q, k, v = (
            _stacked_linear(a, params[f"{pre}attn.{n}.weight"], params[f"{pre}attn.{n}.bias"])
            .unflatten(-1, (attn.heads, -1))
            .transpose(-3, -2)
            for n in "qkv"
        )
        o = _attention(q, k, v).transpose(-3, -2).flatten(-2)
        h = h + _stacked_linear(o, params[pre + "attn.o.weight"], params[pre + "attn.o.bias"])
        a = _stacked_layer_norm(h, params[pre + "ln2.weight"], params[pre + "ln2.bias"], block.ln2.eps)
        a = block.mlp[1](_stacked_linear(a, params[pre + "mlp.0.weight"], params[pre + "mlp.0.bias"]))
        h = h + _stacked_linear(a, params[pre + "mlp.2.weight"], params[pre + "mlp.2.bias"])
    h = _stacked_layer_norm(h, params["norm.weight"], params["norm.bias"], t.norm.eps).mean(-2)
    return _stacked_linear(h, params["head.weight"], params["head.bias"])


def looped_forward(
    template: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    shared_input: bool,
) -> torch.Tensor:
    """M models one after the other through ``functional_call`` on channels-last images: x [M, b, C, H, W] or
    shared [b, C, H, W] -> [M, b, K]; in train mode BatchNorm updates each model's slice of the stacked buffers
    in place. For ResNets without gradients: on one CPU thread a 308k-parameter MNIST ResNet (resnet-mnist)
    evaluates ~2x faster than vmap, whose batched convolutions run NCHW (2,100 vs 4,300 model-images/s, 8
    models x 1,000 images), and batching models as grouped convolutions measured no faster than one at a time
    (oneDNN's dense kernels already fill the core at these 16-128 channels)."""
    m = next(iter(params.values())).shape[0]

    def cl(t: torch.Tensor) -> torch.Tensor:  # explicit strides: a 1-channel NCHW tensor also passes as channels-last
        return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=torch.channels_last).copy_(t)

    shared = cl(x) if shared_input else None
    outs = [
        functional_call(
            template,
            ({k: v[i] for k, v in params.items()}, {k: v[i] for k, v in buffers.items()}),
            (shared if shared is not None else cl(x[i]),),
        )
        for i in range(m)
    ]
    return torch.stack(outs)


def population_forward(
    template: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    shared_input: bool = True,
    feature_major: bool = False,
    grouped: bool = True,
) -> torch.Tensor:
    """Outputs [M, b, K] of M models of ``template``'s architecture: x [M, b, ...] or shared [b, ...].

    ``params``/``buffers`` hold stacked [M, *shape] tensors. MLPs take the fused GEMM path
    (``stacked_mlp_forward``; ``feature_major`` for training steps), everything else ``vmap`` over
    ``functional_call``, so the template's mode decides BatchNorm: eval uses the running statistics, train
    normalizes by the batch and updates the stacked buffers in place. Plain CNNs take the grouped-convolution
    path (``stacked_cnn_forward``), ResNets too (``stacked_resnet_forward``) except wider ones on CPU with
    gradients off, which take the looped one (``looped_forward``), unless ``grouped=False`` (vmap: the reference
    they are tested and benched against). The one forward of the trainer's steps and checkpoint metrics and of
    ``zoo.evaluate``.
    """
    if isinstance(template, MLP):
        return stacked_mlp_forward(template, params, x, shared_input, feature_major=feature_major)
    if isinstance(template, Transformer):
        return stacked_transformer_forward(template, params, x, shared_input)
    if grouped and grouped_cnn_supported(template) and x.dim() == (4 if shared_input else 5):
        return stacked_cnn_forward(template, params, buffers, x, shared_input)
    image = x.dim() == (4 if shared_input else 5)
    cpu_eval = x.device.type == "cpu" and not torch.is_grad_enabled()  # measured on CPU only; a GPU keeps vmap
    if grouped and image and grouped_resnet_supported(template):
        # training steps: grouped (1.18x vmap per step, 64 width-8 ResNets); without gradients on CPU: grouped for
        # narrow ResNets (stem width <= 8: 1.6x the looped path), looped for wider ones (width 16 even, 32: 1.15x)
        narrow = template.stem[0].out_channels <= 8  # type: ignore[union-attr,index]
        if not cpu_eval or narrow:
            return stacked_resnet_forward(template, params, buffers, x, shared_input)
    if grouped and isinstance(template, ResNet) and cpu_eval and image:
        return looped_forward(template, params, buffers, x, shared_input)

    def f(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (p, b), (xi,))

    return vmap(f, in_dims=(0, 0, None if shared_input else 0))(params, buffers, x)


def output_shapes(
    module: nn.Module, x: torch.Tensor, keep: Callable[[nn.Module], bool] | None = None
) -> list[tuple[str, tuple[int, ...]]]:
    """(name, per-sample output shape) of the submodules ``keep`` selects (default: the leaves), in forward
    order, from one eval-mode pass on one sample of ``x``; the module's mode is restored."""
    keep = keep or (lambda m: not list(m.children()))
    shapes: list[tuple[str, tuple[int, ...]]] = []

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                shapes.append((name, tuple(out.shape[1:])))

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in module.named_modules() if keep(m)]
    was_training = module.training
    try:
        with torch.no_grad():
            module.eval()
            module(x[:1])
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return shapes


def attention_floats_per_sample(template: nn.Module) -> int:
    """Elements of one block's attention scores [heads, T, T] per sample of a zoo transformer; 0 for others."""
    if not isinstance(template, Transformer) or not len(template.blocks):
        return 0
    block: Block = template.blocks[0]  # type: ignore[assignment]
    t = template.pos.shape[0]
    return block.attn.heads * t * t


def activation_floats_per_sample(module: nn.Module, x: torch.Tensor) -> int:
    """Elements of all intermediate outputs for one sample: sizes evaluation chunks to a memory bound."""
    return max(sum(math.prod(shape) for _, shape in output_shapes(module, x)), 1)


# one evaluation chunk's largest intermediate on CPU: 2M floats (8 MB), so the chunk's tensors stay in cache and
# its freed buffers are reused instead of page-faulted in anew. Measured (bench/population_eval_chunk.py, one
# checkpoint evaluation alternating in one process, docs/bench-population-eval-chunk.json): the Small-CNN-Zoo MNIST
# CNNs of bench case cnn-zoo-mnist (64 models, 5,000 images) 16.1 s -> 2.1 s on 1 thread, 6.3 s -> 1.3 s on 2 (the
# whole split was one chunk), BatchNorm CNNs 1.4-1.7x and ResNets 2.0-2.6x on digits. MLPs keep the memory bound:
# their few stacked GEMMs gain from long chunks (width 128 on 1 thread: 0.89x with this bound)
EVAL_CACHE_FLOATS = 2**21


def largest_activation_floats_per_sample(module: nn.Module, x: torch.Tensor) -> int:
    """Elements of the largest single intermediate output for one sample (leaf modules)."""
    return max((math.prod(shape) for _, shape in output_shapes(module, x)), default=1)


def cpu_eval_chunk(module: nn.Module, x: torch.Tensor, models: int, memory_chunk: int) -> int:
    """Samples per CPU evaluation chunk of ``models`` stacked models of ``module``: ``memory_chunk`` (the memory
    bound) for MLPs, otherwise at most as many as keep the largest intermediate within ``EVAL_CACHE_FLOATS``."""
    if isinstance(module, MLP):
        return memory_chunk
    return max(1, min(memory_chunk, EVAL_CACHE_FLOATS // (models * largest_activation_floats_per_sample(module, x))))
