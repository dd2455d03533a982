"""Split map service: the function the JSON route, the page and a saved-exploration re-run call."""
from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

from app.api.errors import check_feature_index
from app.api.limits import enforce_limits
from app.api.schemas import PromptFields
from app.api.splits.schemas import (
    ContextModel,
    DictionaryModel,
    FineMatchModel,
    HoleModel,
    MetaModel,
    MetaTermModel,
    SplitMapRequest,
    SplitMapResponse,
    StitchingModel,
)
from app.engine import splits
from app.engine.tokens import token_text, token_texts

_LOCK = threading.Lock()
_INDEXES: OrderedDict = OrderedDict()  # id(engine) -> (engine, atlas, SplitIndex, {(threshold, child_cos): summary})
_KEEP = 4
N_META = 6
CHILD_BINS = 10  # children histogram: 0 .. 9, then >= 10


def split_index(engine) -> tuple[splits.SplitIndex, dict]:
    """The engine's split index over its atlas (decoders only when there is no atlas), built once and cached
    until the engine's atlas object changes. Returns (index, its summary cache)."""
    atlas = getattr(engine, "atlas", None)
    with _LOCK:
        hit = _INDEXES.get(id(engine))
        if hit is not None and hit[0] is engine and hit[1] is atlas:
            _INDEXES.move_to_end(id(engine))
            return hit[2], hit[3]
    with engine.session():  # copies of the decoders (the SAEs belong to the engine)
        Wc = engine.saes["coarse"].W_dec.detach().float().cpu().numpy().copy()
        Wf = engine.saes["fine"].W_dec.detach().float().cpu().numpy().copy()
    if atlas is not None:
        # the atlas keeps the codes of its first tokens only (its co-firing sample)
        n = atlas.codes["coarse"].shape[0]
        ix = splits.SplitIndex(atlas.codes["coarse"], atlas.codes["fine"], Wc, Wf, valid=atlas.valid[:n])
    else:
        ix = splits.SplitIndex.decoders_only(Wc, Wf)
    with _LOCK:
        _INDEXES[id(engine)] = (engine, atlas, ix, {})
        while len(_INDEXES) > _KEEP:
            _INDEXES.popitem(last=False)
        return ix, _INDEXES[id(engine)][3]


def summary_for(ix: splits.SplitIndex, cache: dict, threshold: float, child_cos: float) -> splits.StitchSummary:
    key = (float(threshold), float(child_cos))
    with _LOCK:
        if key in cache:
            return cache[key]
    s = splits.stitch_summary(ix, threshold=threshold, child_cos=child_cos)
    with _LOCK:
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        cache[key] = s
    return s


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _labeller(atlas):
    if atlas is None:
        return lambda sae, i: None
    return lambda sae, i: atlas.label(sae, int(i))


def _context(atlas, sae: str, index: int, row: int) -> ContextModel | None:
    if atlas is None:
        return None
    ex = atlas.example(sae, index, row, left=12, right=4)
    return ContextModel(tokens=list(ex.tokens), acts=[float(a) for a in ex.acts], position=ex.position - ex.start)


def _match(m: splits.FineMatch, label) -> FineMatchModel:
    return FineMatchModel(fine=m.fine, label=label("fine", m.fine), cosine=m.cosine, n_fine=m.n_fine, n_both=m.n_both,
                          p_fine_given_coarse=m.p_fine_given_coarse, p_coarse_given_fine=m.p_coarse_given_fine,
                          jaccard=m.jaccard, child=m.child)


def _hole(h: splits.Hole, atlas, label) -> HoleModel:
    return HoleModel(position=h.position, sae=h.sae, feature=h.feature, label=label(h.sae, h.feature),
                     activation=h.activation, relative=h.relative, context=_context(atlas, h.sae, h.feature, h.position))


def _dictionary(s: splits.StitchSummary, c: int) -> DictionaryModel:
    nch = np.minimum(s.n_children, CHILD_BINS)
    cov = s.coverage[np.isfinite(s.coverage)]
    edges = np.linspace(0.0, 1.0, 11)
    cov_counts, _ = np.histogram(cov, bins=edges)
    return DictionaryModel(threshold=s.threshold, bin_edges=list(s.bin_edges), counts=list(s.counts),
                           n_reconstruction=s.n_reconstruction, n_novel=s.n_novel, child_cos=s.child_cos,
                           children_counts=[int(x) for x in np.bincount(nch, minlength=CHILD_BINS + 1)],
                           coverage_edges=[float(e) for e in edges], coverage_counts=[int(x) for x in cov_counts],
                           n_children=int(s.n_children[c]))


def run_split_map(engine, settings, req: SplitMapRequest) -> SplitMapResponse:
    """Children, co-firing, holes, meta-decomposition, the whole-dictionary view and (with a prompt) stitching."""
    enforce_limits(req, settings.limits)
    widths = {k: int(s.cfg.d_sae) for k, s in engine.saes.items()}
    check_feature_index(engine.saes, "coarse", req.coarse, ["body", "coarse"])
    if req.fine is not None:
        check_feature_index(engine.saes, "fine", req.fine, ["body", "fine"])
    ids = text = None
    if req.prompt is not None:
        from app.api.analysis.service import encode_checked

        ids, text = encode_checked(engine, settings, PromptFields(prompt=req.prompt, system_prompt=req.system_prompt,
                                                                  chat=req.chat))
    atlas = getattr(engine, "atlas", None)
    label = _labeller(atlas)
    ix, cache = split_index(engine)
    c = req.coarse
    m = splits.split_map(ix, c, child_cos=req.child_cos, top=req.top, strong_frac=req.strong_frac,
                         n_examples=req.n_examples)
    summ = summary_for(ix, cache, req.threshold, req.child_cos)
    meta_for = ([req.fine] if req.fine is not None else []) + [x.fine for x in m.children] + [x.fine for x in m.by_cosine]
    seen, meta = set(), []
    for f in meta_for:
        if f in seen or len(meta) >= N_META:
            continue
        seen.add(f)
        d = splits.meta_decomposition(ix.fine_unit, ix.coarse_unit, f)
        meta.append(MetaModel(fine=f, label=label("fine", f), residual=d.residual, cosine=d.cosine,
                              terms=[MetaTermModel(coarse=j, coef=v, label=label("coarse", j)) for j, v in d.terms]))
    stitching = None
    if ids is not None:
        all_children = [x.fine for x in m.children]
        with engine.session():
            st = splits.stitch_on_prompt(engine.model, engine.saes["coarse"], engine.saes["fine"], engine.hook_name, ids, c,
                                         all_children, sink_norm=engine.profile.sink_norm)
        dec = lambda i: token_text(engine.tokenizer, i)  # noqa: E731
        strip = token_texts(engine.tokenizer, ids)
        stitching = StitchingModel(
            children=list(st.children), positions=list(st.positions), tokens=[strip[p] for p in st.positions],
            coarse_act=list(st.coarse_act), children_act=list(st.children_act), rel_error_coarse=st.rel_error_coarse,
            rel_error_stitched=st.rel_error_stitched, rel_error_per_pos=[list(x) for x in st.rel_error_per_pos],
            next_clean=[(dec(i), p) for i, p in st.next_clean], next_coarse=[(dec(i), p) for i, p in st.next_coarse],
            next_stitched=[(dec(i), p) for i, p in st.next_stitched], kl_coarse=st.kl_coarse, kl_stitched=st.kl_stitched)
    return SplitMapResponse(
        profile=engine.profile.name, coarse=c, widths=widths, label=label("coarse", c),
        atlas="ok" if atlas is not None else (getattr(engine, "atlas_status", None) or "no atlas"),
        n_tokens=m.n_tokens, n_coarse=m.n_coarse,
        density=_finite(atlas.density["coarse"][c]) if atlas is not None else None,
        max_act=_finite(atlas.max_act["coarse"][c]) if atlas is not None else None,
        child_cos=req.child_cos, strong_frac=req.strong_frac, coverage=_finite(m.coverage),
        children=[_match(x, label) for x in m.children], by_cosine=[_match(x, label) for x in m.by_cosine],
        by_cofiring=[_match(x, label) for x in m.by_cofiring],
        n_holes=m.n_holes, holes=[_hole(h, atlas, label) for h in m.holes],
        n_reverse_holes=m.n_reverse_holes, reverse_holes=[_hole(h, atlas, label) for h in m.reverse_holes],
        meta=meta, dictionary=_dictionary(summ, c), stitching=stitching, text=text,
    )
