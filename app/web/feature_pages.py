"""The feature page (`/features/{sae}/{index}`, a stable shareable address), the search page and the atlas card
fragment; they call the same services as the JSON API (app/api/features, app/api/analysis)."""
from __future__ import annotations

import html
import re

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from app.api.analysis import run_feature
from app.api.deps import EngineDep, SettingsDep
from app.api.errors import errors_of
from app.api.features import SearchRequest, atlas_status, check_feature, feature_atlas, run_search, steer_link
from app.web.forms import last
from app.web.templating import render_fragment, render_page
from app.web.views import fill_result, guarded

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/features/{sae}/{index}", response_class=HTMLResponse)
def feature_page(request: Request, sae: str, index: str, engine: EngineDep, settings: SettingsDep):
    """Label, density, histogram, examples, tokens, neighbours and the vocabulary projection of one feature."""
    ctx = {"engine": engine, "page": "features", "sae": sae, "index": 0, "width": 0, "hook_name": engine.hook_name,
           "fa": None, "card": None, "atlas_status": atlas_status(engine).model_dump()}

    def fill() -> None:
        if not re.fullmatch(r"-?[0-9]{1,12}", index):
            raise HTTPException(404, detail=f"feature index must be a whole number >= 0, not {index!r}")
        ctx["index"] = int(index)
        ctx["width"] = check_feature(engine, sae, ctx["index"])  # a negative index too: 404 naming the range
        fa = feature_atlas(engine, sae, ctx["index"])
        ctx["fa"] = fa.model_dump() if fa is not None else None
        ctx["card"] = run_feature(engine, settings, sae, ctx["index"], top=12).model_dump()
    status = guarded(ctx, fill)
    if status == 404:  # no such feature: the 404 page naming the range (never a page titled after another index)
        return render_page(request, "404.html", {"engine": engine, "page": "features", "path": request.url.path,
                                                 "reasons": ctx["errors"]}, 404)
    return render_page(request, "feature.html", ctx, status)


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request, engine: EngineDep, settings: SettingsDep):
    """One box: features that fire on the query (through the model) and atlas labels / examples containing it."""
    params = request.query_params
    q, mode = last(params, "q"), last(params, "mode") or "both"
    sort, min_f1 = last(params, "sort") or "rank", last(params, "min_label_f1") or 0
    ctx = {"engine": engine, "page": "search", "q": q, "mode": mode, "sort": sort, "min_label_f1": min_f1, "result": None}
    status = 200
    if q is not None:
        status = fill_result(ctx, lambda: run_search(engine, settings, SearchRequest.model_validate(
            {"q": q, "mode": mode, "sort": sort, "min_label_f1": min_f1})), (ValidationError,)).pop("status", 200)
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
