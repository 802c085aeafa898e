"""One padded weight space for all layouts of a zoo that share a topology (e.g. MLPs of several widths).

Each tensor is zero-padded to its largest shape over the layouts; a narrow network embedded this way is
the wide network with dead units, so permutations, statistics and encoders see its real units only via
per-layout masks. Integer buffers (BatchNorm's ``num_batches_tracked``) are left out: they count steps,
which would leak batch size and epochs. The neuron graph and the permutation groups come from
zoo.rebasin's traced ``PermutationSpec`` of the layouts (one source of truth for weight symmetries).
Everything a trained encoder needs to rebuild the space is ``to_dict()``: plain lists and strings, safe
for ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from zoo.errors import ZooError
from zoo.layout import Entry, Layout
from zoo.rebasin.graph import NeuronGraph
from zoo.rebasin.spec import PermutationSpec, spec_for_layout

_FLOAT = ("float32", "float16", "bfloat16", "float64")


def Slot(name: str, shape: tuple[int, ...], offset: int, kind: str) -> Entry:
    """A tensor in the padded vector: a layout entry (name, padded shape, offset), always float32."""
    return Entry(name, shape, offset, "float32", kind)


def _node_norms(graph: NeuronGraph, present: set[str]) -> list[dict[str, str]]:
    """Per node set: BatchNorm field -> tensor name, for tensors in the space (a neuron has one BatchNorm)."""
    out: list[dict[str, str]] = [{} for _ in graph.nodesets]
    for norm in graph.norms:
        if out[norm.nodeset]:
            raise ZooError(
                f"two BatchNorms act on the units of {graph.nodesets[norm.nodeset].name!r}; "
                "the neuron graph gives each neuron one set of BatchNorm features"
            )
        out[norm.nodeset] = {f: name for f, name in norm.tensors if name in present}
    return out


def _float_entries(layout: Layout, buffers: bool) -> list[Entry]:
    return [e for e in layout.entries if e.dtype in _FLOAT and (buffers or e.kind == "parameter")]


class WeightSpace:
    """Padded union of layouts with one topology; ``size`` is the padded vector length P."""

    def __init__(self, layouts: Sequence[Layout], buffers: bool = True):
        if not layouts:
            raise ZooError("no layouts given: the selection holds no models")
        self.buffers = bool(buffers)
        self.layouts: list[Layout] = []
        if not layouts[0].arch:
            raise ZooError("layout has no architecture spec; cannot derive its neuron graph")
        self._specs: dict[int, PermutationSpec] = {0: spec_for_layout(layouts[0])}
        graph = self._specs[0].graph
        assert graph is not None  # spec_for_layout traces the graph
        self.graph: NeuronGraph = graph
        self._names = [e.name for e in _float_entries(layouts[0], self.buffers)]
        self._kinds = {e.name: e.kind for e in _float_entries(layouts[0], self.buffers)}
        shapes: dict[str, list[int]] = {}
        for lay in layouts:
            self._check(lay)
            for e in _float_entries(lay, self.buffers):
                cur = shapes.setdefault(e.name, list(e.shape))
                shapes[e.name] = [max(a, b) for a, b in zip(cur, e.shape)]
        slots, off = [], 0
        for n in self._names:
            s = Slot(n, tuple(shapes[n]), off, self._kinds[n])
            slots.append(s)
            off = s.stop
        self.slots: tuple[Entry, ...] = tuple(slots)
        self.size = off
        self._slot = {s.name: s for s in self.slots}
        self.node_norms = _node_norms(self.graph, set(self._slot))  # per node set: BatchNorm field -> tensor
        self.unit_sizes: list[list[int]] = []  # per layout: size of every node set
        self._gather: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._masks: list[torch.Tensor] = []
        for lay in layouts:
            self.add_layout(lay)

    # ------------------------------------------------------------------ layouts
    def _check(self, layout: Layout) -> None:
        names = [e.name for e in _float_entries(layout, self.buffers)]
        if names != self._names:
            raise ZooError(
                "the selected models have different architectures (tensor names differ: "
                f"{sorted(set(names) ^ set(self._names))[:4]}); select one with data.query=..."
            )

    def _sizes_from_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> list[int]:
        sizes = [-1] * len(self.graph.nodesets)
        for layer in self.graph.layers:
            w = shapes[layer.weight]
            for idx, val in ((layer.dst, w[0]), (layer.src, w[1])):
                if sizes[idx] not in (-1, val):
                    raise ZooError(f"tensor {layer.weight!r} of shape {tuple(w)} does not fit its neighbours")
                sizes[idx] = int(val)
        return sizes

    def add_layout(self, layout: Layout) -> int:
        """Index of ``layout`` in this space, adding it when new; ZooError if it does not fit the padding."""
        for i, lay in enumerate(self.layouts):
            if [(e.name, e.shape) for e in lay.entries] == [(e.name, e.shape) for e in layout.entries]:
                return i
        self._check(layout)
        entries = _float_entries(layout, self.buffers)
        src, dst = [], []
        for e in entries:
            slot = self._slot[e.name]
            if len(e.shape) != len(slot.shape) or any(a > b for a, b in zip(e.shape, slot.shape)):
                raise ZooError(f"tensor {e.name!r} of shape {e.shape} is larger than this space's {slot.shape}")
            src.append(torch.arange(e.offset, e.stop))
            pad = torch.arange(slot.offset, slot.stop).reshape(slot.shape)
            dst.append(pad[tuple(slice(0, s) for s in e.shape)].reshape(-1))
        dst_t = torch.cat(dst) if dst else torch.zeros(0, dtype=torch.long)
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[dst_t] = True
        self.layouts.append(layout)
        self.unit_sizes.append(self._sizes_from_shapes({e.name: e.shape for e in entries}))
        self._gather.append((torch.cat(src) if src else dst_t, dst_t))
        self._masks.append(mask)
        self._mask_table = torch.stack(self._masks)
        return len(self.layouts) - 1

    def spec(self, layout_index: int) -> PermutationSpec:
        """zoo.rebasin's permutation spec of layout ``layout_index`` (its real, unpadded tensors), traced once."""
        if layout_index not in self._specs:
            self._specs[layout_index] = spec_for_layout(self.layouts[layout_index])
        return self._specs[layout_index]

    def layout_of_state_dict(self, state: Mapping[str, torch.Tensor]) -> Layout:
        """A Layout for a plain state dict, with names/shapes/dtypes from its tensors (arch of this space)."""
        entries, off = [], 0
        for name, t in state.items():
            kind = "parameter" if self._kinds.get(name) == "parameter" else "buffer"
            e = Entry(name, tuple(t.shape), off, str(t.dtype).removeprefix("torch."), kind)
            entries.append(e)
            off = e.stop
        return Layout(tuple(entries), dict(self.layouts[0].arch))

    # ------------------------------------------------------------------ tensors
    def pad(self, weights: torch.Tensor, layout_index: int) -> torch.Tensor:
        """[n, P_layout] raw store vectors -> [n, P] padded (zeros outside the layout's real units)."""
        src, dst = self._gather[layout_index]
        out = weights.new_zeros(weights.shape[0], self.size, dtype=torch.float32)
        out[:, dst] = weights[:, src].to(torch.float32)
        return out

    def unpad(self, weights: torch.Tensor, layout_index: int) -> torch.Tensor:
        """[n, P] padded -> [n, P_layout] in the layout's own order (integer buffers set to 0)."""
        src, dst = self._gather[layout_index]
        out = weights.new_zeros(weights.shape[0], self.layouts[layout_index].size)
        out[:, src] = weights[:, dst]
        return out

    def mask(self, layout_index: torch.Tensor) -> torch.Tensor:
        """[n] layout indices -> [n, P] bool mask of real (unpadded) positions."""
        return self._mask_table.to(layout_index.device)[layout_index]

    def slot(self, name: str) -> Entry:
        return self._slot[name]

    def view(self, weights: torch.Tensor, name: str) -> torch.Tensor:
        """[n, P] -> [n, *padded shape] view of one tensor."""
        s = self._slot[name]
        return weights[:, s.offset : s.stop].reshape(weights.shape[0], *s.shape)

    def states(self, weights: torch.Tensor, layout_index: int) -> dict[str, torch.Tensor]:
        """[n, P] padded rows of one layout -> its stacked state dict ``[n, *shape]`` (views of the real units;
        tensors the space leaves out, such as integer buffers, are zeros)."""
        n, out = weights.shape[0], {}
        for e in self.layouts[layout_index].entries:
            if e.name in self._slot:
                index = (slice(None), *(slice(0, d) for d in e.shape))
                out[e.name] = self.view(weights, e.name)[index]
            else:
                out[e.name] = torch.zeros(n, *e.shape, dtype=getattr(torch, e.dtype), device=weights.device)
        return out

    def group_sizes(self) -> dict[str, int]:
        """Permutation group -> its padded number of units (the widest layout's)."""
        out: dict[str, int] = {}
        for ns, size in zip(self.graph.nodesets, self.max_sizes()):
            if ns.group is not None:
                out[ns.group] = max(out.get(ns.group, 0), size)
        return out

    def sizes_tensor(self) -> torch.Tensor:
        """[L, nodesets] long: number of real units of every node set, per layout."""
        return torch.tensor(self.unit_sizes, dtype=torch.long)

    def max_sizes(self) -> list[int]:
        return [max(col) for col in zip(*self.unit_sizes)]

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict:
        return {"buffers": self.buffers, "layouts": [lay.to_json() for lay in self.layouts]}

    @classmethod
    def from_dict(cls, d: Mapping) -> WeightSpace:
        return cls([Layout.from_json(x) for x in d["layouts"]], buffers=bool(d.get("buffers", True)))
