"""The one registration block: every router, every saved-exploration view and every Jinja filter/global.

Nothing registers itself on import; `create_app` calls `register_all(app)`, which builds a fresh view registry
(app.state.views) and Jinja environment (app.state.templates) for that app and refuses to start when a
registered view has no fragment template or a template uses a filter that is not registered here.
How to add a view: docs/DEVELOPING.md.
"""
from __future__ import annotations

from functools import partial

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api import (
    analysis,
    attribution,
    discover,
    experiment,
    explorations,
    features,
    health,
    patching,
    splits,
    steering,
)
from app.api import map as map_api
from app.api import profile as profile_api
from app.api import tokenize as tokenize_api
from app.core.settings import ROOT
from app.explorations.provenance import remember_result
from app.explorations.registry import ViewRegistry
from app.http.static_assets import StaticAssets
from app.viz.attention import attention_panel, top_dla
from app.viz.attribution import ablation_figure
from app.viz.decomposition import discovery_view
from app.viz.experiment import experiment_view
from app.viz.lens import lens_figure, lens_kl_figure, visible
from app.viz.map import drift_figure as map_drift_figure
from app.viz.map import paths_figure as map_paths_figure
from app.viz.names import feature_name
from app.viz.patching import (
    SCORE_NAMES,
    attribution_scatter,
    grid_figure,
    head_rows,
    pattern_figure,
    score_figure,
    top_deltas,
)
from app.viz.splits import children_figure, max_cosine_histogram
from app.viz.steering import dose_figure
from app.viz.temperature import temperature_figure
from app.web import (
    analysis_pages,
    attention_pages,
    attribution_pages,
    discover_pages,
    docs_pages,
    experiment_pages,
    exploration_pages,
    feature_pages,
    map_pages,
    patching_pages,
    profile_pages,
    site_pages,
    splits_pages,
    steering_pages,
    urls,
)
from app.web.templating import build_templates, check_fragments

# JSON API first, then the pages (order matters only for overlapping paths; there are none).
ROUTERS = (health.router, analysis.router, steering.router, discover.router, explorations.router,
           analysis_pages.router, steering_pages.router, discover_pages.router, exploration_pages.router,
           features.router, feature_pages.router,
           splits.router, attribution.router, splits_pages.router, attribution_pages.router,
           map_api.router, map_pages.router,
           experiment.router, experiment_pages.router,
           profile_api.router, profile_pages.router, tokenize_api.router, docs_pages.router, site_pages.router,
           patching.router, patching_pages.router, attention_pages.router)

# kind -> the view's address codec (app/web/codecs.py): registered with the view below, and the one way a template
# links to a view (`view_url`)
CODECS = {"analysis": analysis_pages.CODEC, **urls.CODECS, discover.KIND: discover_pages.CODEC,
          splits.KIND: splits_pages.CODEC, attribution.KIND: attribution_pages.CODEC, map_api.KIND: map_pages.CODEC,
          experiment.KIND: experiment_pages.CODEC, patching.COMPARE_KIND: patching_pages.COMPARE_CODEC,
          patching.PATCHING_KIND: patching_pages.PATCHING_CODEC, patching.HEADS_KIND: patching_pages.HEADS_CODEC}


def view_url(kind: str, inputs: dict) -> str:
    """A link to `kind`'s page showing these inputs: its codec's address (the bare page when too long)."""
    codec = CODECS[kind]
    return codec.write(inputs) or codec.path


FILTERS = {"lens_figure": lens_figure, "lens_kl_figure": lens_kl_figure, "visible": visible,
           "lens_switch_vals": analysis_pages.lens_switch_vals, "dose_figure": dose_figure,
           "temperature_figure": temperature_figure,
           "split_histogram": max_cosine_histogram, "split_children_figure": children_figure,
           "attribution_figure": ablation_figure, "experiment_csv": experiment.to_csv,
           "patching_scatter": attribution_scatter, "patching_top_deltas": top_deltas}
GLOBALS = {"discovery_view": discovery_view, "map_paths_figure": map_paths_figure, "map_drift_figure": map_drift_figure,
           "experiment_view": experiment_view, "test_steering_url": experiment_pages.test_steering_url,
           "remember_result": remember_result, "feature_name": feature_name, "analyze_url": analysis_pages.analyze_url, "view_url": view_url,
           "patching_grid_figure": partial(grid_figure, link=analysis_pages.CODEC.write), "head_score_figure": score_figure, "head_pattern_figure": pattern_figure,
           "head_rows": head_rows, "head_score_names": SCORE_NAMES,
           "attention_panel": attention_panel, "attention_top_dla": top_dla}  # results shown with a Save form count as computed (app/explorations/provenance.py)

_PROMPT = {"prompt": "Once upon a time", "max_new_tokens": 4, "temperature": 0.0, "seed": 0}
_FEATURE = {"sae": "coarse", "index": 5, "mode": "add", "value": 8.0}
_TIMINGS = ("seconds", "tokens_per_s")


def build_views() -> ViewRegistry:
    """Every view that can be saved, re-run and forked (examples are valid on the `tiny` profile)."""
    views = ViewRegistry()
    views.register("analysis", analysis.AnalyzeRequest, analysis.run_analysis, CODECS["analysis"], response_model=analysis.AnalyzeResponse,
                   example={"prompt": "The cat sat on the mat.", "top_k": 5}, label="analysis")
    views.register("generation", steering.schemas.GenerateRequest, steering.service.run_generate, CODECS["generation"],
                   response_model=steering.schemas.GenerateResponse, example={**_PROMPT, "steering": [_FEATURE]}, volatile=_TIMINGS)
    views.register("steering", steering.schemas.SteerRequest, steering.service.run_steer, CODECS["steering"], response_model=steering.schemas.SteerResponse,
                   example={**_PROMPT, "steering": [_FEATURE]}, volatile=_TIMINGS)
    views.register("dose", steering.schemas.DoseRequest, steering.service.run_dose, CODECS["dose"], response_model=steering.schemas.DoseResponse,
                   example={**_PROMPT, "feature": _FEATURE, "strengths": [-8.0, 0.0, 8.0]}, volatile=_TIMINGS)
    views.register("temperature", steering.schemas.TemperatureRequest, steering.service.run_temperature, CODECS["temperature"],
                   response_model=steering.schemas.TemperatureResponse,
                   example={"prompt": "Once upon a time", "temperatures": [0.5, 1.0], "top_k": 5}, volatile=_TIMINGS)
    views.register("system_shift", steering.schemas.SystemShiftRequest, steering.service.run_system_shift, CODECS["system_shift"],
                   response_model=steering.schemas.SystemShiftResponse, label="system shift", volatile=_TIMINGS,
                   example={"prompt": "Which queue should I use?", "system_a": None, "system_b": "You are a Kafka expert."})
    views.register(discover.KIND, discover.DiscoverRequest, discover.run_discovery, CODECS[discover.KIND],
                   response_model=discover.DiscoveryResponse, label="concept discovery",
                   example={"concept_set": None, "contrast_set": None,
                            "concept_prompts": ["Paris is in France.", "I love French cheese.", "The Eiffel Tower"],
                            "contrast_prompts": ["The cat sat down.", "Water is wet.", "A box of pens"],
                            "n_coarse": 2, "n_fine": 5, "top_k": 5})
    views.register(splits.KIND, splits.SplitMapRequest, splits.run_split_map, CODECS[splits.KIND], response_model=splits.SplitMapResponse,
                   label="split map",
                   example={"coarse": 3, "top": 5, "prompt": "The cat sat on the mat."})
    views.register(attribution.KIND, attribution.AttributionRequest, attribution.run_attribution, CODECS[attribution.KIND],
                   response_model=attribution.AttributionResponse, label="token attribution",
                   example={"prompt": "The cat sat on the mat.", "top": 5, "n_validate": 3})
    views.register(map_api.KIND, map_api.MapRequest, map_api.run_map, CODECS[map_api.KIND], response_model=map_api.MapResponse,
                   label="activation map",
                   example={"prompt": "Tell me about cats.", "system_prompt": "You are a pirate.", "drift_ks": [0, 1],
                            "steer": [{"sae": "coarse", "index": 3, "strength": 8.0}], "max_new_tokens": 3})
    views.register(experiment.KIND, experiment.ExperimentRequest, experiment.run_experiment, CODECS[experiment.KIND],
                   response_model=experiment.ExperimentResponse, label="steering experiment",
                   volatile=_TIMINGS,
                   example={"anchor": 3, "children": [7], "concept_set": None, "contrast_set": None, "eval_set": None,
                            "concept_prompts": ["Paris is in France.", "I love French cheese.", "The Eiffel Tower"],
                            "contrast_prompts": ["The cat sat down.", "Water is wet.", "A box of pens"],
                            "eval_prompts": ["My favourite place is", "For dinner I cook"], "strengths": [4.0],
                            "max_new_tokens": 4})
    views.register(patching.COMPARE_KIND, patching.CompareRequest, patching.run_compare, CODECS[patching.COMPARE_KIND],
                   response_model=patching.CompareResponse, label="prompt comparison",
                   example={"prompt_a": "The cat sat", "prompt_b": "The dog sat", "tokens": ["a", "e"], "top": 5})
    views.register(patching.PATCHING_KIND, patching.PatchingRequest, patching.run_patching, CODECS[patching.PATCHING_KIND],
                   response_model=patching.PatchingResponse, label="activation patching",
                   example={"clean": "The cat sat", "corrupt": "The dog sat", "answer": "a", "wrong": "e"})
    views.register(patching.HEADS_KIND, patching.HeadsRequest, patching.run_heads, CODECS[patching.HEADS_KIND],
                   response_model=patching.HeadsResponse, label="attention heads",
                   example={"seq_len": 6, "n_seqs": 2})
    return views


def build_app_templates(assets: StaticAssets | None = None):
    """The Jinja environment with every filter and global the templates use; `asset(name)` is the hashed static
    address (app/http/static_assets.py: the app's own, or one over the same static/ folder, which gives the same hashes)."""
    assets = assets if assets is not None else StaticAssets(ROOT / "static")
    return build_templates(FILTERS, {**GLOBALS, "asset": assets.url})


def register_all(app: FastAPI) -> None:
    """Routers, views and templates for this app; raises when a view cannot be rendered."""
    views = build_views()
    templates = build_app_templates(getattr(app.state, "assets", None))
    check_fragments(templates, views)
    app.state.views = views
    app.state.templates = templates
    for router in ROUTERS:
        app.include_router(router)
    # a browser at an address with no page gets an HTML 404 page; the API, scripts and htmx keep JSON
    app.add_exception_handler(StarletteHTTPException, site_pages.http_error_handler)
