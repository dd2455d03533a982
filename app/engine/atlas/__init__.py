"""The feature atlas: corpus context for every feature of both SAEs (pure computation, no FastAPI).

A corpus of token windows is streamed through the model to the hook layer and encoded with both SAEs, one
chunk of windows at a time; each chunk's codes are kept sparse (CSR, activations rounded to the storage dtype)
and, when a work folder is given, checkpointed so an interrupted build resumes. From the sparse codes every
feature gets (vectorised over the non-zeros, never a dense tokens x d_sae matrix): fire density, mean
activation when firing, max activation, a histogram of its non-zero activations, its top max-activating
windows, windows sampled from its activation quantiles, the tokens it fires on most, and its nearest
decoder-cosine neighbours in both SAEs (chunked matmuls).

Definitions (the tests recompute each one by brute force over the dense activation matrix):
- only `valid` positions count (not position 0 of a window, not special tokens, not residual norm > sink_norm);
- an example is a window; its activation is the feature's max over the window, at the first position
  reaching it; top examples = windows by that activation, descending (ties: earlier window first);
- quantile examples: the windows where the feature fires, ranked as above, cut into `n_quantiles` equal
  rank bands (strongest first); `per_quantile` evenly spaced ranks in each band;
- histogram: `n_bins` equal bins over [0, max_act] of the non-zero activations (the max in the last bin);
- top tokens: token ids by firing count, then summed activation, then id.
- label: see token_label (selective top tokens by count x log lift; topic tokens of the top windows).
- position artefacts: features whose top examples sit at window positions 1..7 half the time or more.
"""
from __future__ import annotations

from app.engine.atlas.build import add_neighbours, build_atlas, forward_to_hook, summarise
from app.engine.atlas.core import (
    ATLAS_VERSION,
    Atlas,
    FeatureAtlas,
    PairIndependence,
    SearchHit,
    _assemble,
    position_artefacts,
    token_label,
)
from app.engine.atlas.query import pair_independence, search_atlas, search_by_text
from app.engine.atlas.storage import (
    atlas_fingerprint,
    build_command,
    default_atlas_dir,
    folder_bytes,
    load_atlas,
    load_for_engine,
    save_atlas,
)

__all__ = ["add_neighbours", "build_atlas", "forward_to_hook", "summarise", "ATLAS_VERSION", "Atlas", "FeatureAtlas",
           "PairIndependence", "SearchHit", "_assemble", "position_artefacts", "token_label", "pair_independence", "search_atlas",
           "search_by_text", "atlas_fingerprint", "build_command", "default_atlas_dir", "folder_bytes", "load_atlas",
           "load_for_engine", "save_atlas"]
