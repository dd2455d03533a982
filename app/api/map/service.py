"""Map services: the functions the JSON routes, the HTML page/fragments and saved-exploration re-runs call."""
from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException

from app.api.analysis.service import encode_checked, system_of, system_read
from app.api.errors import check_feature_index, no_such_feature, out_of_range, unprocessable
from app.api.limits import enforce_limits
from app.api.map.schemas import (
    BoxModel,
    DriftPointModel,
    LayoutInfo,
    MapRequest,
    MapResponse,
    MapSearchRequest,
    MapSearchResponse,
    MarkedModel,
    MovedModel,
    PathModel,
    PathPointModel,
    PlaceFeature,
    PlaceRegion,
    PullModel,
    RegionModel,
    SteerModel,
    TopFeature,
)
from app.engine import navigation as nav
from app.engine.layout import Layout, load_layout
from app.engine.layout import search as places
from app.engine.prompts import encode_prompt
from app.engine.ranking import rank_mixed

PLACEMENT = ("Each token sits at the activation-weighted mean position of the features active at it (both SAEs): "
             "x_t = Σ a_tf·x_f / Σ a_tf. No UMAP at request time, so a placement is exact arithmetic on the stored "
             "map; a token whose features sit in two regions lands between them. Sinks get no place.")

def map_folder(engine) -> Path:
    from app.engine.atlas import default_atlas_dir

    return Path(engine.atlas_dir) if getattr(engine, "atlas_dir", None) else default_atlas_dir(engine.profile)


def expected_fingerprint(engine) -> str:
    from app.engine.atlas import atlas_fingerprint

    return atlas_fingerprint(engine.profile.name, engine.hook_name, engine.fingerprint)


def build_command(engine) -> str:
    return f"python -m app map --profile {engine.profile.name}"


ON_DEMAND_MAX = 5_000  # SAE pairs this small (the tiny profile) get their map built in memory at first use


def built_in_memory(engine) -> tuple[Layout | None, str]:
    """A small SAE pair's map, built once per SAE weights and kept in memory (nothing written)."""
    def build() -> tuple[Layout, str]:
        from app.engine.layout import build_layout

        decs = {n: engine.saes[n].W_dec.detach().float().cpu().numpy() for n in ("coarse", "fine") if n in engine.saes}
        atlas = getattr(engine, "atlas", None)
        lay = build_layout(decs, seed=0, n_epochs=200, label_fn=atlas.label if atlas is not None else None,
                           fingerprint=expected_fingerprint(engine))
        return lay, "ok (built in memory: small SAEs)"

    return engine.map_cache.built(("memory", engine.fingerprint), build)


def layout_status(engine) -> tuple[Layout | None, str]:
    """(layout, "ok") or (None, why there is none + the command that builds it); loaded once per file version."""
    path = map_folder(engine) / "layout.npz"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        if sum(int(s.W_dec.shape[0]) for s in engine.saes.values()) <= ON_DEMAND_MAX:
            return built_in_memory(engine)
        return None, f"missing: no map in {path.parent}; build it with `{build_command(engine)}`"
    def load() -> tuple[Layout | None, str]:
        try:
            lay = load_layout(path.parent)
            widths = tuple(int(engine.saes[n].W_dec.shape[0]) for n in lay.sae_names)
            if lay.fingerprint != expected_fingerprint(engine) or widths != lay.widths:
                return None, (f"stale: the map in {path.parent} was built for other SAEs; rebuild it with "
                              f"`{build_command(engine)}`")
            return lay, "ok"
        except Exception as exc:  # a half-copied file must not take the server down
            return None, f"unreadable: {type(exc).__name__}: {exc}; rebuild it with `{build_command(engine)}`"

    return engine.map_cache.loaded((str(path), stamp, engine.fingerprint), load)


def layout_or_409(engine) -> Layout:
    lay, status = layout_status(engine)
    if lay is None:
        raise HTTPException(409, detail=f"no map for these SAEs ({status})")
    return lay


def label_of(engine, sae: str, index: int) -> str:
    atlas = getattr(engine, "atlas", None)
    try:
        return atlas.label(sae, index) if atlas is not None else ""
    except Exception:
        return ""


def layout_info(lay: Layout) -> LayoutInfo:
    return LayoutInfo(n_points=lay.n, widths=dict(zip(lay.sae_names, lay.widths)), n_regions=len(lay.regions),
                      clustered_share=float((lay.cluster >= 0).mean()) if lay.n else 0.0,
                      preservation=lay.preservation, params=lay.params, fingerprint=lay.fingerprint)


def region_models(lay: Layout) -> list[RegionModel]:
    return [RegionModel(id=r.id, label=r.label, size=r.size, n_coarse=r.n_coarse, centroid=r.centroid, hull=list(r.hull))
            for r in lay.regions]


HOVER_TOP = 3  # features shown per token on the map's hover


def hover_top(engine, cands) -> list[TopFeature]:
    """A token's features for the hover, in ranking.rank_mixed's order (most unusual first, dense ones last)."""
    atlas = getattr(engine, "atlas", None)
    typical = atlas.mean_when_firing if atlas is not None else None
    density = atlas.density if atlas is not None else None
    ranked = rank_mixed(cands, typical, density)[:HOVER_TOP]
    return [TopFeature(sae=r.sae, index=r.index, activation=r.value, label=label_of(engine, r.sae, r.index),
                       ratio=r.ratio, dense=r.dense) for r in ranked]


def path_model(engine, name: str, path: nav.PromptPath) -> PathModel:
    pts = [PathPointModel(position=p.position, token=p.token, x=None if p.xy is None else p.xy[0],
                          y=None if p.xy is None else p.xy[1], sink=p.sink, top=hover_top(engine, p.top))
           for p in path.points]
    return PathModel(name=name, points=pts)


def check_features(engine, req: MapRequest, where: str = "body") -> None:
    """404 naming the valid range for a steered or chosen feature outside its SAE (where: "body" or "query")."""
    for j, f in enumerate(req.steer):
        check_feature_index(engine.saes, f.sae, f.index, [where, "steer", j, "index"])
    if req.feature:
        sae, _, idx = req.feature.partition(":")
        check_feature_index(engine.saes, sae, int(idx), [where, "feature"])


def run_map(engine, settings, req: MapRequest) -> MapResponse:
    """The prompt's path on the map (+ without the system prompt, steered vs unsteered, drift as asked)."""
    enforce_limits(req, settings.limits)
    check_features(engine, req)
    if req.drift_ks and not req.system_prompt:
        raise unprocessable(["body", "drift_ks"], "drift needs a system prompt (the shift is the system prompt's)")
    lay = layout_or_409(engine)
    ids, _ = encode_checked(engine, settings, req)
    tok = engine.tokenizer
    sink_norm = engine.profile.sink_norm
    paths, pull, steer, drift, note = [], None, None, [], None
    plain_ids = None
    if req.system_prompt and req.compare_system:
        plain_ids = encode_prompt(tok, req.prompt, None, True if req.chat is None else req.chat,
                                  prepend_bos=engine.profile.prepend_bos, no_default_system=req.no_default_system).token_ids
    with engine.session():
        main, _, _ = nav.prompt_path(engine.model, engine.saes, engine.hook_name, ids, lay, sink_norm)
        paths.append(path_model(engine, "prompt", main))
        if plain_ids is not None:
            sp = nav.system_pull(engine.model, engine.saes, engine.hook_name, lay, plain_ids, ids, sink_norm)
            paths.append(path_model(engine, "without system prompt", sp.without))
            pull = PullModel(moved=[MovedModel(sae=m.sae, index=m.index, label=label_of(engine, m.sae, m.index),
                                               without=m.without, with_system=m.with_system, delta=round(m.delta, 5))
                                    for m in sp.moved],
                             feature_shift=sp.feature_shift, resid_shift=sp.resid_shift,
                             map_shift=None if sp.map_shift != sp.map_shift else sp.map_shift)
        if req.steer:
            from app.engine.generation import stop_token_ids
            from app.engine.steering import SteerFeature

            feats = [SteerFeature(f.sae, f.index, "add", f.strength) for f in req.steer]
            st = nav.steered_paths(engine.model, engine.saes, engine.hook_name, lay, ids, feats, req.max_new_tokens,
                                   sink_norm, stop_token_ids(tok))
            paths += [path_model(engine, "unsteered", st.unsteered), path_model(engine, "steered", st.steered)]
            n = st.prompt_len
            steer = SteerModel(prompt_len=n, unsteered_text=tok.decode(list(st.unsteered.token_ids[n:])),
                               steered_text=tok.decode(list(st.steered.token_ids[n:])),
                               marked=[MarkedModel(sae=s, index=i, x=xy[0], y=xy[1], label=label_of(engine, s, i))
                                       for s, i, xy in st.marked])
        if req.drift_ks:
            pts = nav.drift(engine.model, engine.saes, engine.hook_name, tok, req.prompt, req.system_prompt,
                            req.drift_ks, settings.limits.max_prompt_tokens)
            drift = [DriftPointModel(k=d.k, n_tokens=d.n_tokens, feature_shift=d.feature_shift, resid_shift=d.resid_shift)
                     for d in pts]
            if len(pts) < len(req.drift_ks):
                note = (f"k > {pts[-1].k if pts else -1} left out: the conversation would exceed "
                        f"{settings.limits.max_prompt_tokens} tokens (max_prompt_tokens)")
    return MapResponse(profile=engine.profile.name, hook_name=engine.hook_name, layout=layout_info(lay),
                       regions=region_models(lay), paths=paths, pull=pull, steer=steer, drift=drift, drift_note=note,
                       system=system_of(engine, req),
                       without_system=system_read(engine, req.prompt, None, True if req.chat is None else req.chat,
                                                  req.no_default_system) if plain_ids is not None else None)


def point_row(lay: Layout, sae: str, index: int) -> int:
    """The layout row of a point; 404 naming the SAEs or the valid index range."""
    if sae not in lay.sae_names:
        raise HTTPException(404, detail=f"no SAE named {sae!r}; this profile has {', '.join(lay.sae_names)}")
    width = lay.widths[lay.sae_names.index(sae)]
    if not 0 <= index < width:
        raise out_of_range(["path", "index"], no_such_feature(sae, index, width))
    return lay.offset(sae) + index


def feature_point(engine, sae: str, index: int) -> dict:
    """What a click on a point shows: label, density, place, region and top atlas examples (no model work)."""
    lay = layout_or_409(engine)
    row = point_row(lay, sae, index)
    cid = int(lay.cluster[row])
    out = {"sae": sae, "index": index, "x": float(lay.xy[row, 0]), "y": float(lay.xy[row, 1]), "region": cid,
           "region_label": lay.regions[cid].label if cid >= 0 else None, "label": label_of(engine, sae, index),
           "density": None, "examples": []}
    atlas = getattr(engine, "atlas", None)
    if atlas is not None:
        out["density"] = float(atlas.density[sae][index])
        try:
            fa = atlas.feature(sae, index, left=8, right=2)
            out["examples"] = [{"tokens": list(e.tokens), "acts": [round(a, 3) for a in e.acts],
                                "at": e.position - e.start} for e in fa.examples[:3]]
        except Exception:
            pass
    return out


def place_regions(lay: Layout, hits=None) -> list[PlaceRegion]:
    """Regions with the box that shows each (all of them, largest first, or the search's hits)."""
    hits = hits if hits is not None else [places.RegionHit(r.id, r.label, r.size, r.centroid, places.region_box(lay, r), ())
                                          for r in lay.regions]
    return [PlaceRegion(id=h.id, label=h.label, size=h.size, centroid=h.centroid, box=BoxModel(**vars(h.box)),
                        matched=list(h.matched)) for h in hits]


def run_map_search(engine, settings, req: MapSearchRequest) -> MapSearchResponse:
    """Regions and features matching a query (no model work): region names and words, a feature id, atlas hits."""
    enforce_limits(req, settings.limits, loc=("query",))
    lay = layout_or_409(engine)
    atlas = getattr(engine, "atlas", None)
    hits: list = []
    if atlas is not None and places.parse_feature_id(req.q, lay.sae_names) is None:
        from app.engine.atlas import search_atlas

        found = search_atlas(atlas, req.q, top=req.top)  # whole words only, each SAE's hits by lift
        hits = [(h.sae, h.index) for h in sorted((h for hs in found.values() for h in hs), key=lambda h: (-h.score, h.sae, h.index))]
    got = places.search_map(lay, req.q, hits, max_features=req.top)
    feats = [PlaceFeature(sae=f.sae, index=f.index, label=label_of(engine, f.sae, f.index), x=f.x, y=f.y, region=f.region,
                          region_label=lay.regions[f.region].label if f.region >= 0 else None, box=BoxModel(**vars(f.box)))
             for f in got.features]
    return MapSearchResponse(query=got.query, regions=place_regions(lay, got.regions), features=feats,
                             atlas=atlas is not None)
