"""Neural functional (NFN) encoder: the ``nfn`` package's permutation-equivariant NP layers over a network's
weight matrices, an HNP pooling readout and an MLP head (Zhou et al. 2023, "Permutation Equivariant
Neural Functionals").

Choices for our zoos (digits MLPs 64-w-w-10, CNNs with BatchNorm, widths 8-64):
- NP layers (``nfn.layers.NPLinear``), not HNP: an NP layer's parameters depend only on channels and the
  number of layers, so one encoder serves every width of a zoo; an HNP layer's grow with
  inputs x outputs (its first- and last-layer maps take ``n_in`` and ``n_out`` times the channels),
  which would be fine for 64 x 10 digits but not for image-sized inputs, and buys little once the inputs
  and outputs are told apart as below.
- NP layers treat input pixels and output classes as permutable too; the first layer's learned
  input/output position embeddings (``io_embed``) break that symmetry, so only hidden units stay
  exchangeable, which is the symmetry zoo.rebasin's spec says the networks have.
- The readout is ``HNPPool``: a mean over hidden units only, keeping input and output positions, so its
  size grows with ``n_in + n_out`` (not their product).
- Every layout is encoded at its real size (padded units never enter a mean), so a narrow network gets
  the same prediction alone as in a mixed-width batch.
- Chains only (MLP, CNN with global pooling): a residual stream ties permutations across layers in a way
  NP layers do not model, so ResNets are refused. BatchNorm tensors (and the bias) are extra channels of
  their layer's bias, so they permute with their channel.
- ``stats=true`` appends StatNN's per-tensor statistics to the pooled features before the head (the NFN code's
  ``append_stats``); they are invariant too, so the encoder stays invariant.
"""

from __future__ import annotations

import torch
from nfn.common import ArraySpec, NetworkSpec, WeightSpaceFeatures
from nfn.layers import HNPPool, NPLinear, TupleOp
from torch import nn

from wsl.encoders.base import WeightEncoder, mlp
from wsl.encoders.config import NFNConfig
from wsl.encoders.statnn import StatFeatures
from wsl.space import WeightSpace
from zoo.errors import ZooError
from zoo.rebasin.graph import BN_FIELDS


def _chain(space: WeightSpace) -> list:
    """The neuron layers in forward order; ZooError unless the network is a plain chain."""
    st = space.graph
    if st.skips:
        raise ZooError("encoder nfn handles chain networks (MLP, CNN); this zoo's networks have residual skips")
    layers = list(st.layers)
    for a, b in zip(layers[:-1], layers[1:]):
        if b.src != a.dst:
            raise ZooError("encoder nfn handles chain networks (MLP, CNN): a layer does not read the previous one")
    if st.nodesets[layers[0].src].role != "input" or st.nodesets[layers[-1].dst].role != "output":
        raise ZooError("encoder nfn: the layer chain does not run from the network's input to its output")
    return layers


class NFNEncoder(WeightEncoder):
    """NP layers (first with input/output embeddings) -> HNP pooling -> MLP head; invariant to hidden units."""

    CONFIG = NFNConfig

    def __init__(
        self,
        space: WeightSpace,
        out_dim: int,
        hidden: int = 32,
        layers: int = 3,
        head: int = 256,
        dropout: float = 0.1,
        stats: bool = False,
    ):
        super().__init__(space, out_dim)
        if int(layers) < 1 or int(hidden) < 1:
            raise ZooError(f"encoder nfn needs layers >= 1 and hidden >= 1, got layers={layers}, hidden={hidden}")
        self.chain = _chain(space)
        sizes = space.unit_sizes
        first, last = self.chain[0].src, self.chain[-1].dst
        if len({s[first] for s in sizes}) > 1 or len({s[last] for s in sizes}) > 1:
            raise ZooError("encoder nfn: the zoo's layouts differ in input or output size")
        self.n_in, self.n_out = sizes[0][first], sizes[0][last]
        self.fields = [f for f in BN_FIELDS if any(f in space.node_norms[l.dst] for l in self.chain)]
        self.channels = 1 + len(self.fields)  # weight (bias) channel plus one per BatchNorm field
        n = len(self.chain)
        w_spec = []
        for i, layer in enumerate(self.chain):
            shape = [self.n_out if i == n - 1 else -1, self.n_in if i == 0 else -1, *layer.kernel]
            w_spec.append(ArraySpec(tuple(shape)))
        b_spec = [ArraySpec((self.n_out if i == n - 1 else -1,)) for i in range(n)]
        self.spec = NetworkSpec(w_spec, b_spec)
        dims = [self.channels] + [int(hidden)] * int(layers)
        blocks: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            blocks += [NPLinear(self.spec, a, b, io_embed=(i == 0)), TupleOp(nn.ReLU())]
        self.body = nn.Sequential(*blocks)
        self.pool = HNPPool(self.spec)
        self.stats = StatFeatures(space) if stats else None
        n_stats = self.stats.dim if self.stats is not None else 0
        self.head = mlp([HNPPool.get_num_outs(self.spec) * int(hidden) + n_stats, int(head), out_dim], dropout)

    def features(self, w: torch.Tensor, k: int) -> WeightSpaceFeatures:
        """Rows of one layout -> nfn features at the layout's real sizes: weights [m, C, out, in, *kernel]."""
        m, sizes = w.shape[0], self.space.unit_sizes[k]
        weights, biases = [], []
        for layer in self.chain:
            o, i = sizes[layer.dst], sizes[layer.src]
            wt = self.space.view(w, layer.weight)[(slice(None), slice(0, o), slice(0, i))][:, None]
            pad = wt.new_zeros(m, self.channels - 1, *wt.shape[2:])
            weights.append(torch.cat([wt, pad], dim=1))
            chans = [self.space.view(w, layer.bias)[:, :o] if layer.bias else w.new_zeros(m, o)]
            norms = self.space.node_norms[layer.dst]
            chans += [self.space.view(w, norms[f])[:, :o] if f in norms else w.new_zeros(m, o) for f in self.fields]
            biases.append(torch.stack(chans, dim=1))
        return WeightSpaceFeatures(weights, biases)

    def forward(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        out = w.new_zeros(len(w), self.out_dim)
        stats = self.stats(w, layout) if self.stats is not None else None
        for k in layout.unique().tolist():
            rows = (layout == k).nonzero().flatten()
            pooled = self.pool(self.body(self.features(w[rows], k))).flatten(1)
            if stats is not None:
                pooled = torch.cat([pooled, stats[rows].to(pooled.dtype)], dim=1)
            out[rows] = self.head(pooled).to(out.dtype)
        return out
