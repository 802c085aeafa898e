"""A population training step for stacked MLPs with a hand-written backward (no autograd graph).

The trainer's hot path for the zoo MLP on classification data: the same kernels autograd would run
(feature-major ``baddbmm`` forward, ``log_softmax``/``nll_loss``, their aten backward functions, the
activation's aten backward, ``bmm`` for weight and input gradients, bias gradients as sums), so the
gradients are bit-identical to ``autograd`` on ``stacked_mlp_forward`` (tested), but without building a
graph each step, and every activation and gradient goes to a buffer allocated once per shape: the
freed-and-refaulted 16 MB activations of a width-128 population cost as much as its GEMMs.
"""
from __future__ import annotations

import torch
from torch import nn

# activation module -> (needs the pre-activation, its backward from (grad, saved tensor))
_BACKWARD = {
    nn.ReLU: (False, lambda g, a: torch.ops.aten.threshold_backward(g, a, 0)),
    nn.Tanh: (False, lambda g, a: torch.ops.aten.tanh_backward(g, a)),
    nn.Sigmoid: (False, lambda g, a: torch.ops.aten.sigmoid_backward(g, a)),
    nn.SiLU: (True, lambda g, z: torch.ops.aten.silu_backward(g, z)),
}


def supported(template: nn.Module) -> bool:
    """True when every layer of ``template.layers`` is a Linear or an activation this step can differentiate."""
    layers = getattr(template, "layers", None)
    return layers is not None and all(isinstance(m, nn.Linear) or type(m) in _BACKWARD for m in layers)


class StackedMLPStep:
    """Loss and gradients of M stacked MLPs on their own batches: ``loss(params, x, y)`` then ``grads(weights)``."""

    def __init__(self, template: nn.Module):
        if not supported(template):
            raise ValueError("StackedMLPStep needs an MLP of Linear layers and ReLU/Tanh/Sigmoid/SiLU")
        self.template = template
        self._buffers: dict[tuple, torch.Tensor] = {}
        self._saved: tuple | None = None

    def _buf(self, tag: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        key = (tag, shape, like.dtype, like.device)
        t = self._buffers.get(key)
        if t is None:
            t = self._buffers[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return t

    @torch.no_grad()
    def loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-model mean cross-entropy [M] of x [M, b, ...] with labels y [M, b]; keeps what ``grads`` needs."""
        m, b = x.shape[0], x.shape[1]
        h = x.flatten(2).transpose(1, 2)  # feature-major [M, in, b], as stacked_mlp_forward(feature_major=True)
        saved = []  # per Linear: (index, input h, activation after it or None, tensor its backward needs)
        layers = list(self.template.layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Linear):
                continue
            w, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            z = torch.baddbmm(bias.unsqueeze(-1), w, h, out=self._buf(f"z{i}", (m, w.shape[1], b), w))
            act = layers[i + 1] if i + 1 < len(layers) and not isinstance(layers[i + 1], nn.Linear) else None
            if act is None:
                saved.append((i, h, None, None))
                h = z
                continue
            needs_z, _ = _BACKWARD[type(act)]
            a = act(z)  # the module itself, so the forward is the one stacked_mlp_forward runs
            saved.append((i, h, act, z if needs_z else a))
            h = a
        lsm = torch.log_softmax(h, 1)  # [M, K, b]
        loss = torch.nn.functional.nll_loss(lsm, y, reduction="none").mean(1)
        self._saved = (saved, lsm, y, b, params)
        return loss

    @torch.no_grad()
    def grads(self, active: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gradients of sum over active models of their loss, by parameter name (buffers reused every step)."""
        saved, lsm, y, b, params = self._saved
        self._saved = None
        m = lsm.shape[0]
        # d(mean over b)/d(nll) masked by ``active``, as autograd gives for where(active, loss, 0).sum()
        scale = torch.where(active, torch.ones((), dtype=lsm.dtype, device=lsm.device), torch.zeros((), dtype=lsm.dtype,
                            device=lsm.device)).div_(b)
        g_lsm = self._buf("g_lsm", tuple(lsm.shape), lsm).zero_()
        g_lsm.scatter_(1, y.unsqueeze(1), (-scale).view(m, 1, 1).expand(m, 1, b))
        g = torch.ops.aten._log_softmax_backward_data(g_lsm, lsm, 1, lsm.dtype)
        out: dict[str, torch.Tensor] = {}
        for k in range(len(saved) - 1, -1, -1):
            i, h_in, _, _ = saved[k]
            wname, bname = f"layers.{i}.weight", f"layers.{i}.bias"
            out[bname] = g.sum(2, keepdim=True).squeeze(-1)
            out[wname] = torch.bmm(g, h_in.transpose(1, 2), out=self._buf(f"gw{i}", (m, g.shape[1], h_in.shape[1]), g))
            if k == 0:
                break
            _, _, act, keep = saved[k - 1]
            w = params[wname]
            g_in = torch.bmm(w.transpose(1, 2), g, out=self._buf(f"gh{i}", (m, w.shape[2], g.shape[2]), g))
            g = _BACKWARD[type(act)][1](g_in, keep)
        return out
