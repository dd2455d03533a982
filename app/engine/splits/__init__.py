"""How a coarse SAE feature splits into fine SAE features (pure computation over corpus codes and decoders).

Inputs are what the feature atlas holds: activations of both SAEs on one token corpus as scipy CSR matrices
([T, d_sae], a feature "fires" on a token when its activation is > 0), a [T] bool mask of the tokens to count,
and the two decoder matrices. Nothing here reads the atlas, the engine or the environment.

- children of coarse feature c: fine features whose decoder cosine to W_dec_coarse[c] is >= child_cos;
  each fine feature also gets P(fine fires | c fires) and P(c fires | fine fires) on the same tokens;
- reconstruction vs novel (SAE stitching, Leask et al.): every fine feature's maximum decoder cosine to the
  coarse dictionary; >= a threshold: a split or copy of a coarse feature, below: new;
- absorption holes (after Chanin et al.): tokens where c fires strongly and none of its children fire, and
  tokens where a child fires strongly and c is silent;
- meta-decomposition: a fine decoder direction as a sparse non-negative mix of coarse decoder directions
  (greedy non-negative OMP, every step refitted by scipy's NNLS);
- stitching on a prompt: the coarse reconstruction with c's term replaced by its children's fine terms.
"""
from __future__ import annotations

from app.engine.splits.dictionary import StitchSummary, stitch_summary
from app.engine.splits.index import SplitIndex, max_cosine_to, unit_rows
from app.engine.splits.maps import FineMatch, Hole, SplitMap, fine_matches, split_map
from app.engine.splits.meta import MetaDecomposition, meta_decomposition, nonneg_decomposition
from app.engine.splits.stitching import Stitching, make_splice_hook, stitch_on_prompt, stitched_reconstruction

__all__ = ["StitchSummary", "stitch_summary", "SplitIndex", "max_cosine_to", "unit_rows", "FineMatch", "Hole", "SplitMap",
           "fine_matches", "split_map", "MetaDecomposition", "meta_decomposition", "nonneg_decomposition", "Stitching",
           "make_splice_hook", "stitch_on_prompt", "stitched_reconstruction"]
