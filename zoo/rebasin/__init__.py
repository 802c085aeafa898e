"""Git Re-Basin canonicalization: permutation specs from modules, weight matching, MergeMany, quality reports."""
from .align import align_flat, align_zoo, choose_reference
from .apply import identity_perms, invert_perms, permute_flat, permute_state, permute_states, random_perms
from .graph import NeuronGraph
from .matching import MatchResult, match_pairs, match_population, merge_many, weight_matching
from .report import loss_barrier, loss_barriers
from .spec import PermutationSpec, permutation_spec, spec_for_layout

__all__ = ["PermutationSpec", "permutation_spec", "spec_for_layout", "identity_perms", "random_perms",
           "invert_perms", "permute_state", "permute_states", "permute_flat", "MatchResult", "match_population",
           "match_pairs", "weight_matching", "NeuronGraph", "merge_many", "align_zoo", "align_flat", "choose_reference",
           "loss_barrier", "loss_barriers"]
