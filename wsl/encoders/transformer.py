"""Neuron-token transformer: one token per neuron of every layer (its incoming weights, bias,
BatchNorm/LayerNorm parameters and its values of any learned tensor added to its units, e.g. a transformer's
position embedding), positions (layer, neuron index), a transformer encoder and a [CLS] readout. Attention's
q/k/v/o projections are layers like any other; the neuron index tells heads apart (units are head-major).

Padded units of narrow networks are masked out of attention. The neuron-index embedding lets the model
tell output neurons apart; it also makes it sensitive to hidden-unit order (use the permute augmentation).
"""

from __future__ import annotations

import torch
from torch import nn

from wsl.encoders.base import WeightEncoder, mlp
from wsl.encoders.config import TransformerConfig
from wsl.space import WeightSpace
from zoo.rebasin.graph import BN_FIELDS, Added


class NeuronTransformer(WeightEncoder):
    """Transformer over neuron tokens; ``d_model`` wide, ``layers`` deep, ``heads`` attention heads."""

    CONFIG = TransformerConfig

    def __init__(
        self, space: WeightSpace, out_dim: int, d_model: int = 64, layers: int = 2, heads: int = 4, dropout: float = 0.0
    ):
        super().__init__(space, out_dim)
        st = space.graph
        self.proj = nn.ModuleList()
        self.added: list[list[Added]] = []  # per layer: the learned tensors added to its output units
        for layer in st.layers:
            slot = space.slot(layer.weight)
            fan_in = slot.numel // slot.shape[0]
            added = [a for a in st.added if a.nodeset == layer.dst]
            self.added.append(added)
            extra = sum(space.slot(a.name).numel // space.slot(a.name).shape[a.axis] for a in added)
            self.proj.append(nn.Linear(fan_in + 1 + len(BN_FIELDS) + extra, d_model))
        maxes = space.max_sizes()
        self.layer_emb = nn.Embedding(len(st.layers), d_model)
        self.unit_emb = nn.Embedding(max(maxes[l.dst] for l in st.layers), d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        block = nn.TransformerEncoderLayer(
            d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(block, int(layers), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = mlp([d_model, d_model, out_dim])

    def tokens(self, w: torch.Tensor, layout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[n, T, d] tokens and [n, T] padding mask (True = padded unit)."""
        n = w.shape[0]
        sizes = self.space.sizes_tensor().to(w.device)[layout]
        toks, pads = [], []
        for li, layer in enumerate(self.space.graph.layers):
            wt = self.space.view(w, layer.weight)
            o = wt.shape[1]
            parts = [wt.reshape(n, o, -1)]
            parts.append(self.space.view(w, layer.bias)[..., None] if layer.bias else w.new_zeros(n, o, 1))
            norm = self.space.node_norms[layer.dst]
            for f in BN_FIELDS:
                parts.append(self.space.view(w, norm[f])[..., None] if f in norm else w.new_zeros(n, o, 1))
            for a in self.added[li]:  # [n, *shape] -> [n, units, values per unit]
                parts.append(self.space.view(w, a.name).movedim(a.axis + 1, 1).reshape(n, o, -1))
            units = torch.arange(o, device=w.device)
            x = self.proj[li](torch.cat(parts, dim=2)) + self.layer_emb.weight[li] + self.unit_emb(units)[None]
            toks.append(x)
            pads.append(units[None, :] >= sizes[:, layer.dst, None])
        cls = self.cls.expand(n, 1, -1)
        pad = torch.cat([torch.zeros(n, 1, dtype=torch.bool, device=w.device), *pads], dim=1)
        return torch.cat([cls, *toks], dim=1), pad

    def forward(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        x, pad = self.tokens(w, layout)
        h = self.encoder(x, src_key_padding_mask=pad)
        return self.head(self.norm(h[:, 0]))
