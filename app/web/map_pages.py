"""The map page (/map), its htmx fragment (a prompt's paths) and the two small helpers map.js calls
(/map/figure: the base map in another colouring; /map/feature/{sae}/{index}: a clicked point's card;
/map/example/{sae}/{index}: a hovered point's example line, fetched on first hover rather than sent with 18k points).

templates/fragments/map.html is rendered from {inputs, result, kind} only (the saved-explorations contract); the
page URL carries the inputs, so a copied address re-opens the same view (colouring and filter included).
"""
from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from app.api.deps import EngineDep, SettingsDep, StoreDep
from app.api.errors import errors_of, invalid
from app.api.map import KIND, PLACEMENT, MapRequest, feature_point, layout_or_409, layout_status
from app.api.map.routes import search_request
from app.api.map.service import check_features, place_regions, point_row, run_map, run_map_search
from app.engine.layout import NEIGHBOURS
from app.engine.layout.values import decoder_cosines, selectivity_vector
from app.viz.map import esc, map_figure, point_table, snippet
from app.web.codecs import Address, Codec, defaults_of, fields_query
from app.web.forms import cap_url, last, model_fields_of
from app.web.templating import render_fragment, render_page
from app.web.views import form_fragment, query_page, service_view

router = APIRouter(tags=["pages"], include_in_schema=False)
VIEW_FIELDS = ("color_by", "show", "feature", "discovery")
JSON_FIELDS = ("steer", "drift_ks")

def parse_inputs(params) -> MapRequest:
    """MapRequest from query or form fields (empty fields take their defaults; lists as JSON or '0,1,2')."""
    raw = model_fields_of(params, MapRequest, flags=("chat", "compare_system", "no_default_system"))
    if "drift_ks" in raw and isinstance(raw["drift_ks"], str):
        s = raw["drift_ks"].strip()
        try:
            raw["drift_ks"] = json.loads(s) if s.startswith("[") else [int(x) for x in s.replace(" ", "").split(",") if x]
        except ValueError:
            pass  # pydantic names the field
    if "steer" in raw and isinstance(raw["steer"], str):
        try:
            raw["steer"] = json.loads(raw["steer"])
        except ValueError:
            pass
    # the form's one steering row: steer_sae / steer_index / steer_strength
    si, ss = last(params, "steer_index"), last(params, "steer_strength")
    if "steer" not in raw and si not in (None, "") and ss not in (None, ""):
        raw["steer"] = [{"sae": last(params, "steer_sae") or "coarse", "index": si, "strength": ss}]
    return MapRequest.model_validate(raw)


def view_settings(engine, params) -> MapRequest:
    """The view fields (colouring, filter, chosen feature, discovery) of an address, checked against the SAEs'
    widths: ValidationError, or a 404 naming the valid range."""
    vs = parse_inputs({k: v for k, v in params.items() if k in VIEW_FIELDS} | {"prompt": "x"})
    check_features(engine, vs, where="query")
    return vs


DEFAULTS = defaults_of(MapRequest)
SEARCH = "q"  # the search box's text: in the address, not in the request


def map_url(inputs) -> str | None:
    """The map's address: the prompt's fields when there is a prompt, the view's (colouring, filter, feature,
    discovery) and the search text where they differ from the defaults; None when too long to push."""
    q = {k: v for k, v in inputs.items() if (k in MapRequest.model_fields or k == SEARCH) and v not in (None, "")
         and (k == "prompt" or v != DEFAULTS.get(k))}
    return cap_url("/map" + ("?" + fields_query(q) if q else ""))


CODEC = Codec("/map", map_url, parse_inputs, page="Map")


def map_address(current: str | None, **changes) -> Address | None:
    """The map's address with `changes` (view fields, the search text), the rest of the page's current address
    (HX-Current-URL) kept as it is; written by the map's codec, with its tab title."""
    kept = dict(parse_qsl(urlsplit(current).query, keep_blank_values=True)) if current else {}
    return CODEC.address(kept | changes)


map_view = service_view(KIND, parse_inputs, run_map)


def table_for(engine, lay) -> dict:
    atlas = getattr(engine, "atlas", None)
    return engine.map_cache.point_table((id(lay), id(atlas)), lambda: point_table(lay, atlas))


def selectivity_values(store, lay, discovery: str | None) -> np.ndarray | None:
    """[N] selectivity of the features a saved discovery scored (nan elsewhere); None when there is none."""
    if not discovery:
        return None
    try:
        doc = store.get(discovery)
    except Exception:
        doc = None
    if not doc or doc.get("kind") != "discovery":
        return None
    return selectivity_vector(lay, (doc.get("result") or {}).get("tables") or {})


def figure_for(engine, store, lay, color_by: str, show: str, feature: str | None, discovery: str | None,
               extra_rows=()) -> dict:
    """The base map in this colouring (the last few are kept on the engine: building 18k points takes ~0.3 s)."""
    def make() -> dict:
        values = None
        if color_by == "cosine" and feature:
            sae, _, idx = feature.partition(":")
            values = decoder_cosines(lay, engine.saes, sae, int(idx))
        elif color_by == "selectivity":
            values = selectivity_values(store, lay, discovery)
        return map_figure(lay, table_for(engine, lay), color_by, show, values, extra_rows)

    key = (id(lay), id(getattr(engine, "atlas", None)), color_by, show, feature, discovery, tuple(extra_rows))
    return engine.map_cache.figure(key, make)


def prompt_rows(lay, result: dict | None) -> list[int]:
    """Layout rows of the features the prompt's tokens show (kept by the level of detail on very wide SAEs)."""
    rows = set()
    for p in (result or {}).get("paths", []):
        for q in p["points"]:
            for t in q["top"]:
                if t["sae"] in lay.sae_names:
                    rows.add(lay.offset(t["sae"]) + int(t["index"]))
    return sorted(rows)


def honesty(lay) -> dict:
    """The figures the page shows next to the map."""
    return {"preservation": lay.preservation, "k": NEIGHBOURS, "random": NEIGHBOURS / max(1, lay.n - 1),
            "clustered": float((lay.cluster >= 0).mean()), "n": lay.n, "regions": len(lay.regions),
            "widths": dict(zip(lay.sae_names, lay.widths)), "params": lay.params, "d_model": None}


@router.get("/map", response_class=HTMLResponse)
def map_page(request: Request, engine: EngineDep, settings: SettingsDep, store: StoreDep):
    """The map of both SAEs' features; with ?prompt=..., the prompt's path across it."""
    lay, status_line = layout_status(engine)
    ctx, status = query_page(request, engine, settings, "map", KIND, "prompt", map_view,
                             map_status=status_line, placement=PLACEMENT, honesty=None, figure=None)
    if lay is not None:
        try:
            vs = view_settings(engine, request.query_params)
        except (ValidationError, HTTPException) as exc:  # said above the map, which is drawn with the default view
            vs = MapRequest(prompt="x")
            ctx["view_errors"] = errors_of(exc)
            status = status if status != 200 else (exc.status_code if isinstance(exc, HTTPException) else 422)
        ctx["view"] = {k: getattr(vs, k) for k in VIEW_FIELDS}
        ctx["honesty"] = honesty(lay)
        ctx["honesty"]["d_model"] = int(next(iter(engine.saes.values())).W_dec.shape[1])
        ctx["figure"] = figure_for(engine, store, lay, vs.color_by, vs.show, vs.feature, vs.discovery,
                                   prompt_rows(lay, ctx.get("result")) if lay.n > 60_000 else ())
        ctx["places"] = [r.model_dump() for r in place_regions(lay)]
        if request.query_params.get("q"):
            ctx.update(search_context(engine, settings, request.query_params.get("q")))
    return render_page(request, "map.html", ctx, status)


def search_context(engine, settings, q: str) -> dict:
    """{"search": MapSearchResponse dict, "q"} or {"search_errors", "status", "q"} for templates/fragments/map_search.html."""
    try:
        return {"q": q, "search": run_map_search(engine, settings, search_request(q)).model_dump()}
    except HTTPException as exc:
        return {"q": q, "search_errors": errors_of(exc), "status": exc.status_code}


@router.get("/fragments/map/search", response_class=HTMLResponse)
def map_search_fragment(request: Request, engine: EngineDep, settings: SettingsDep, q: str = ""):
    """The places matching q (regions, features) as buttons that fly the map there; the address follows (?q=...)."""
    ctx = search_context(engine, settings, q)
    cur = request.headers.get("HX-Current-URL")
    push = map_address(cur, **{SEARCH: q}) if cur and ctx.get("search") else None
    return render_fragment(request, "fragments/map_search.html", ctx, push)


@router.post("/fragments/map", response_class=HTMLResponse)
async def map_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await form_fragment(request, engine, settings, "fragments/map.html", map_view, CODEC.address)


@router.get("/map/figure")
def map_figure_json(request: Request, engine: EngineDep, store: StoreDep):
    """The base map in another colouring / filter (map.js swaps it in and keeps the prompt's paths on top), with the
    page's address for it (`address`: the current address, HX-Current-URL, with these view fields; None when too
    long) and its tab `title`, which map.js applies."""
    lay, status_line = layout_status(engine)
    if lay is None:
        raise HTTPException(409, detail=f"no map for these SAEs ({status_line})")
    try:
        vs = view_settings(engine, request.query_params)
    except ValidationError as exc:
        raise invalid(exc, ["query"]) from None
    fig = figure_for(engine, store, lay, vs.color_by, vs.show, vs.feature, vs.discovery)
    at = map_address(request.headers.get("HX-Current-URL"), **{k: getattr(vs, k) for k in VIEW_FIELDS})
    body = fig | {"address": at and at.url, "title": at and at.title}  # a copy: the figure is cached
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get("/map/example/{sae}/{index}")
def map_example(sae: str, index: int, engine: EngineDep) -> dict:
    """A point's hover line: its strongest atlas example, the firing token in [brackets] (HTML-escaped for Plotly)."""
    point_row(layout_or_409(engine), sae, index)
    atlas = getattr(engine, "atlas", None)
    return {"sae": sae, "index": index, "example": esc(snippet(atlas, sae, index)) if atlas is not None else ""}


@router.get("/map/feature/{sae}/{index}", response_class=HTMLResponse)
def map_feature_card(request: Request, sae: str, index: int, engine: EngineDep):
    """A clicked point: label, density, region, top atlas examples, links (fragment)."""
    try:
        card, status = feature_point(engine, sae, index), 200
    except HTTPException as exc:
        card, status = {"errors": errors_of(exc)}, exc.status_code
    return render_page(request, "fragments/map_card.html", {"card": card}, status)
