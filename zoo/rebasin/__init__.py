"""Git Re-Basin canonicalization: permutation specs from modules, weight matching, MergeMany, quality reports,
REPAIR of interpolated networks, and the scaling and sign symmetries beside permutations."""

from zoo.rebasin.activations import activation_matching, activation_similarity
from zoo.rebasin.align import align_flat, align_zoo, choose_reference
from zoo.rebasin.apply import identity_perms, invert_perms, permute_flat, permute_state, permute_states, random_perms
from zoo.rebasin.frame import Frame, canonical_frame
from zoo.rebasin.graph import NeuronGraph
from zoo.rebasin.matching import MatchResult, match_pairs, match_population, merge_many, weight_matching
from zoo.rebasin.repair import repair_mix, unit_stats  # repair() itself: zoo.rebasin.repair.repair (no shadowing)
from zoo.rebasin.report import loss_barrier, loss_barriers
from zoo.rebasin.spec import PermutationSpec, permutation_spec, spec_for_layout
from zoo.rebasin.symmetries import canonicalize_units, random_transform, scale_groups

__all__ = [
    "PermutationSpec",
    "permutation_spec",
    "spec_for_layout",
    "identity_perms",
    "random_perms",
    "invert_perms",
    "permute_state",
    "permute_states",
    "permute_flat",
    "MatchResult",
    "match_population",
    "match_pairs",
    "weight_matching",
    "activation_matching",
    "activation_similarity",
    "NeuronGraph",
    "merge_many",
    "align_zoo",
    "align_flat",
    "choose_reference",
    "canonical_frame",
    "Frame",
    "loss_barrier",
    "loss_barriers",
    "repair_mix",
    "unit_stats",
    "canonicalize_units",
    "random_transform",
    "scale_groups",
]
