"""The MLP contrast of docs/transformers-align.md: matched activation correlations and barriers (raw, weight and
activation matching; 3 pairs to model 0) of a digits MLP zoo built by
`zoo build recipe=dwf-mlp-digits-seeds out=/tmp/h34/mlp.zarr recipe.widths=[128] recipe.seeds=4`.

    PYTHONPATH=. .venv/bin/python bench/mlp_activation_contrast.py /tmp/h34/mlp.zarr
"""

import sys

import numpy as np
import torch

import zoo
from zoo.rebasin import (
    activation_matching,
    activation_similarity,
    loss_barriers,
    match_population,
    permute_flat,
    spec_for_layout,
)

torch.set_num_threads(1)
z = zoo.open(sys.argv[1])
((key, layout),) = z.layouts.items()
W = z.weights(z.models.model_id.tolist(), checkpoint=-1)
ds = z.dataset()
spec = spec_for_layout(layout)
X = ds.X_train[torch.randperm(len(ds.X_train), generator=torch.Generator().manual_seed(0))[:512]]
m = layout.build()
ref = layout.unflatten(W[0])
st = layout.unflatten_batch(W[1:])
ra = activation_matching(spec, m, ref, st, X)
Wa = permute_flat(spec, layout, W[1:], ra.perms)
Ww = permute_flat(spec, layout, W[1:], match_population(spec, ref, st).perms)
c = {}
for w in Wa:
    for g, A in activation_similarity(spec, m, ref, layout.unflatten(w), X).items():
        c.setdefault(g, []).append(float(A.diagonal().mean()))
print({g: round(np.mean(v), 2) for g, v in c.items()})
b = loss_barriers(layout, W[:1].expand(9, -1), torch.cat([W[1:], Ww, Wa]), ds)["barrier"].numpy()
print("raw", b[:3].mean(), "weights", b[3:6].mean(), "activations", b[6:].mean())
