"""Concept discovery services: prompt sets in, per-SAE selectivity tables and the coarse -> fine mapping out.

Long runs go through the background job runner (app/jobs/): POST /api/discover/jobs starts (or joins, or
answers from the cache) a job keyed by (profile, SAE fingerprint, prompt-set hash, analysis knobs); poll
GET /api/discover/jobs/{id}; cancel with POST .../cancel; read GET .../result. POST /api/discover runs the
same computation synchronously (scripts, saved-exploration re-runs).
"""
from __future__ import annotations

import hashlib
import json

from app.api.discover.schemas import KIND, DiscoverRequest, DiscoveryResponse, JobStatus
from app.api.health import pair_summary
from app.api.jobs import run_here
from app.api.jobs import status_of as job_status
from app.api.limits import enforce_limits
from app.engine import decomposition as dec
from app.engine import discovery as disc
from app.engine.ranking import dense_last
from app.jobs import Job, JobRunner


def params_of(req: DiscoverRequest) -> disc.DiscoveryParams:
    return disc.DiscoveryParams(aggregate=req.aggregate, top_k=req.top_k, min_fire_rate=req.min_fire_rate,
                                n_coarse=req.n_coarse, n_fine=req.n_fine)


def collect_key(engine, set_hash: str) -> str:
    return f"collect|{engine.profile.name}|{engine.hook_name}|{engine.fingerprint}|{set_hash}"


def result_key(engine, set_hash: str, req: DiscoverRequest) -> str:
    knobs = {k: v for k, v in req.model_dump().items() if k in ("aggregate", "top_k", "min_fire_rate", "n_coarse", "n_fine", "cos_threshold", "rank")}
    h = hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:12]
    return f"discovery|{engine.profile.name}|{engine.fingerprint}|{set_hash}|{h}"


def collect(engine, settings, concept: list[str], contrast: list[str], progress=None, batch_size: int = 16) -> disc.CollectedStats:
    """Forward passes for both sets, the engine lock taken per batch (interactive requests interleave)."""
    ids = disc.encode_prompt_set(engine.tokenizer, concept + contrast, prepend_bos=engine.profile.prepend_bos,
                                 max_tokens=settings.limits.max_prompt_tokens)
    return disc.collect_stats(engine.model, engine.saes, engine.hook_name, ids, len(concept),
                              sink_norm=engine.profile.sink_norm, batch_size=batch_size,
                              batch_context=engine.background_session, progress=progress)


def build_result(engine, collected: disc.CollectedStats, req: DiscoverRequest, set_hash: str, prompts=None) -> dict:
    with engine.background_session():
        res = disc.summarize(collected, engine.saes, params_of(req), prompts)
    res.update(profile=engine.profile.name, hook_name=engine.hook_name, fingerprint=engine.fingerprint, set_hash=set_hash,
               pair_independence=pair_summary(engine.pair_check))
    res["tables"] = {n: ranked_rows(engine, n, rows, req.rank) for n, rows in res["tables"].items()}
    return DiscoveryResponse.model_validate(with_threshold(res, req.cos_threshold)).model_dump()


def ranked_rows(engine, sae: str, rows: list[dict], rank: str) -> list[dict]:
    """A selectivity table's rows with label, ratio (mean on the concept over the typical activation) and the dense
    mark (ranking.rank_features); dense ones after the rest unless rank is "selectivity"."""
    from app.api.analysis.service import feature_label, ranked_features

    out = []
    for r in rows:
        rk = ranked_features(engine, sae, [r["index"]], [r["mean_concept"]])[0]
        out.append({**r, "label": feature_label(engine, sae, r["index"]), "ratio": rk.ratio, "dense": rk.dense})
    return out if rank == "selectivity" else dense_last(out, [r["dense"] for r in out])


def with_threshold(result: dict, cos_threshold: float) -> dict:
    """The result with GO/NO-GO (go_no_go, go) for this cosine threshold: what a run at that threshold returns."""
    gng = []
    if result.get("mapping") is not None:
        m = result["mapping"]
        gng = dec.go_no_go_table(m["coarse"], m["scan"]["matches"], m["scan"]["max_cosine"], m["scan"]["floor"], cos_threshold)
    return {**result, "go_no_go": gng, "go": any(g["go"] for g in gng)}


def run_discovery(engine, settings, req: DiscoverRequest, progress=None, runner: JobRunner | None = None) -> DiscoveryResponse:
    """Synchronous: collect (or reuse the runner's cached collection) then summarise."""
    enforce_limits(req, settings.limits)
    concept, contrast = req.resolve()
    set_hash = disc.prompt_set_hash(concept, contrast)
    ckey = collect_key(engine, set_hash)
    collected = runner.cached(ckey) if runner is not None else None
    if collected is None:
        collected = collect(engine, settings, concept, contrast, progress)
        if runner is not None:
            runner.put_cache(ckey, collected)
    return DiscoveryResponse.model_validate(build_result(engine, collected, req, set_hash, concept + contrast))


def run_as_job_here(engine, settings, req: DiscoverRequest, runner: JobRunner) -> DiscoveryResponse:
    """POST /api/discover: run_discovery as a job of the request's thread, so a server stop interrupts it (503)
    instead of waiting it out."""
    enforce_limits(req, settings.limits)
    concept, contrast = req.resolve()
    key = result_key(engine, disc.prompt_set_hash(concept, contrast), req)
    result = run_here(runner, key, lambda job: run_discovery(engine, settings, req, job.progress, runner).model_dump(),
                      KIND, len(concept) + len(contrast), {"inputs": req.model_dump()})
    return DiscoveryResponse.model_validate(result)


def start_job(runner: JobRunner, engine, settings, req: DiscoverRequest) -> Job:
    """Start (or join, or answer from the cache) the discovery job for these inputs."""
    enforce_limits(req, settings.limits)
    concept, contrast = req.resolve()
    set_hash = disc.prompt_set_hash(concept, contrast)
    key = result_key(engine, set_hash, req)

    def work(job: Job):
        return run_discovery(engine, settings, req, progress=job.progress, runner=runner).model_dump()

    return runner.submit(key, work, kind=KIND, total=len(concept) + len(contrast),
                         meta={"inputs": req.model_dump()})


def status_of(job: Job) -> JobStatus:
    return job_status(job, "/api/discover")
