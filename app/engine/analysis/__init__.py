"""Per-token SAE features, reconstruction quality, logit lens and feature cards (pure computation).

`core`: the dataclasses, sinks, the capturing forward and the residual cache; `features`: `analyze` and feature
cards; `lens`: the logit / tuned lens (`LENS_ROWS_PER_CHUNK` is read there at call time); `unembed`: the lens's
unembedding kernel. The public names are re-exported here."""
from __future__ import annotations

from app.engine.analysis.core import (
    Analysis,
    FeatureCard,
    LogitLens,
    ResidualCache,
    SAETokenView,
    explained_variance,
    lens_hook_names,
    make_store_hook,
    sae_token_views,
    sink_mask,
)
from app.engine.analysis.features import (
    analyze,
    feature_activations,
    feature_activations_and_sinks,
    feature_card,
    logit_direction,
)
from app.engine.analysis.lens import lens_reference, lens_residuals, lens_top, logit_lens

__all__ = ["SAETokenView", "Analysis", "LogitLens", "FeatureCard", "ResidualCache", "sink_mask", "sae_token_views",
           "explained_variance", "make_store_hook", "lens_hook_names", "analyze", "feature_activations",
           "feature_activations_and_sinks", "feature_card", "logit_direction", "lens_residuals", "lens_top",
           "lens_reference", "logit_lens"]
