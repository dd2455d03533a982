"""The feature page (`/features/{sae}/{index}`, a stable shareable address), the search page and the atlas card
fragment; they call the same services as the JSON API (app/api/features, app/api/analysis)."""
from __future__ import annotations

import html

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from app.api.analysis import run_feature
from app.api.deps import EngineDep, SettingsDep
from app.api.features import SearchRequest, atlas_status, check_feature, feature_atlas, run_search, steer_link
from app.web.forms import errors_of, last
from app.web.templating import render_fragment, render_page
from app.web.views import fill_result, guarded

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/features/{sae}/{index}", response_class=HTMLResponse)
def feature_page(request: Request, sae: str, index: str, engine: EngineDep, settings: SettingsDep):
    """Label, density, histogram, examples, tokens, neighbours and the vocabulary projection of one feature."""
    ctx = {"engine": engine, "page": "features", "sae": sae, "index": 0, "width": 0, "hook_name": engine.hook_name,
           "fa": None, "card": None, "atlas_status": atlas_status(engine).model_dump()}

    def fill() -> None:
        if not index.isdigit():
            raise HTTPException(404, detail=f"feature index must be a whole number >= 0, not {index!r}")
        ctx["index"] = int(index)
        ctx["width"] = check_feature(engine, sae, int(index))
        fa = feature_atlas(engine, sae, int(index))
        ctx["fa"] = fa.model_dump() if fa is not None else None
        ctx["card"] = run_feature(engine, settings, sae, int(index), top=12).model_dump()
    return render_page(request, "feature.html", ctx, guarded(ctx, fill))


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request, engine: EngineDep, settings: SettingsDep):
    """One box: features that fire on the query (through the model) and atlas labels / examples containing it."""
    q, mode = last(request.query_params, "q"), last(request.query_params, "mode") or "both"
    ctx = {"engine": engine, "page": "search", "q": q, "mode": mode, "result": None}
    status = 200
    if q is not None:
        status = fill_result(ctx, lambda: run_search(engine, settings, SearchRequest(q=q, mode=mode)),
                             (ValidationError,)).pop("status", 200)
    return render_page(request, "search.html", ctx, status)


@router.get("/fragments/atlas/{sae}/{index}", response_class=HTMLResponse)
def atlas_fragment(request: Request, sae: str, index: int, engine: EngineDep, settings: SettingsDep):
    """The atlas part of a feature card (for cards that load it on demand: steering, discovery, graphs)."""
    ctx = {"fa": None, "atlas_status": atlas_status(engine).model_dump(), "steer_prompt": last(request.query_params, "prompt")}
    try:
        check_feature(engine, sae, index)
        fa = feature_atlas(engine, sae, index)
        ctx["fa"] = fa.model_dump() if fa is not None else None
        link = steer_link(engine, settings, sae, index)
        ctx["steer"] = link.model_dump() if link is not None else None
    except HTTPException as exc:
        return HTMLResponse(f'<p class="errors" role="alert">{html.escape("; ".join(errors_of(exc)))}</p>',
                            status_code=exc.status_code)
    return render_fragment(request, "fragments/_atlas.html", ctx)
