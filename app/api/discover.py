"""Concept discovery as JSON: prompt sets in, per-SAE selectivity tables and the coarse -> fine mapping out.

Long runs go through the background job runner (app/jobs.py): POST /api/discover/jobs starts (or joins, or
answers from the cache) a job keyed by (profile, SAE fingerprint, prompt-set hash, analysis knobs); poll
GET /api/discover/jobs/{id}; cancel with POST .../cancel; read GET .../result. POST /api/discover runs the
same computation synchronously (scripts, saved-exploration re-runs).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import FiniteModel
from app.engine import decomposition as dec
from app.engine import discovery as disc
from app.engine.profiles import DATA_DIR
from app.jobs import Job, JobRunner, get_runner
from app.settings import get_settings

router = APIRouter(prefix="/api/discover", tags=["discovery"])
L = get_settings().limits
PROMPTS_DIR = DATA_DIR / "prompts"
KIND = "discovery"
MAX_COARSE = getattr(L, "max_discovery_coarse", 20)
MAX_FINE = getattr(L, "max_discovery_fine", 200)


def shipped_sets(folder: Path = PROMPTS_DIR) -> dict[str, int]:
    """Name -> number of prompts of each shipped set (data/prompts/<name>.txt)."""
    return {p.stem: len(disc.parse_prompt_lines(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("*.txt"))}


def load_set(name: str, folder: Path = PROMPTS_DIR) -> list[str]:
    return disc.parse_prompt_lines((folder / f"{name}.txt").read_text(encoding="utf-8"))


Prompt = Field(min_length=1, max_length=L.max_prompt_chars)


class DiscoverRequest(FiniteModel):
    """Two prompt sets (shipped by name, or given one prompt per item) and the analysis knobs."""

    model_config = ConfigDict(extra="forbid")

    concept_set: str | None = Field(default="france", description="a shipped set (data/prompts/<name>.txt); ignored when concept_prompts is given")
    contrast_set: str | None = Field(default="neutral", description="a shipped set; ignored when contrast_prompts is given")
    concept_prompts: list[str] | None = Field(default=None, max_length=L.max_prompt_set_size,
                                              description=f"at most {L.max_prompt_set_size} prompts of at most {L.max_prompt_chars} characters")
    contrast_prompts: list[str] | None = Field(default=None, max_length=L.max_prompt_set_size,
                                               description=f"at most {L.max_prompt_set_size} prompts of at most {L.max_prompt_chars} characters")
    aggregate: Literal["max", "mean"] = Field(default="max", description="per-prompt activation: max or mean over tokens (sinks excluded)")
    top_k: int = Field(default=20, ge=1, le=L.max_features_shown, description="rows per SAE table")
    min_fire_rate: float = Field(default=0.25, ge=0.0, le=1.0, description="a feature must fire on this share of concept prompts to be ranked")
    n_coarse: int = Field(default=5, ge=1, le=MAX_COARSE, description="top coarse features to map")
    n_fine: int = Field(default=30, ge=1, le=MAX_FINE, description="top fine features (by selectivity) scored against them")
    cos_threshold: float = Field(default=0.3, ge=-1.0, le=1.0, description="decoder cosine for 'aligned' (blue) and GO/NO-GO")
    corr_threshold: float = Field(default=0.3, ge=-1.0, le=1.0, description="activation correlation for 'correlated'")
    cos_near_zero: float = Field(default=0.1, ge=0.0, le=1.0, description="|cosine| below this counts as 'near 0' (red)")
    hist_coarse: int | None = Field(default=None, ge=0, description="coarse feature whose cosine histogram is drawn (default: the first mapped)")

    @field_validator("concept_set", "contrast_set")
    @classmethod
    def _known_set(cls, v):
        if v is not None and v not in shipped_sets():
            raise ValueError(f"unknown prompt set {v!r}; shipped: {', '.join(shipped_sets())}")
        return v

    @field_validator("concept_prompts", "contrast_prompts")
    @classmethod
    def _prompts(cls, v):
        if v is None:
            return v
        v = [p.strip() for p in v if p and p.strip()]
        if len(v) < 2:
            raise ValueError("give at least 2 non-empty prompts")
        too_long = [i for i, p in enumerate(v) if len(p) > L.max_prompt_chars]
        if too_long:
            raise ValueError(f"prompt {too_long[0]} has more than {L.max_prompt_chars} characters (the limit)")
        total = sum(len(p) for p in v)
        if total > L.max_prompt_set_chars:
            raise ValueError(f"the set has {total} characters; the limit is {L.max_prompt_set_chars}")
        return v

    def resolve(self) -> tuple[list[str], list[str]]:
        """(concept prompts, contrast prompts); 422 naming the field when a side has none."""
        out = []
        for side in ("concept", "contrast"):
            prompts = getattr(self, f"{side}_prompts")
            if prompts is None:
                name = getattr(self, f"{side}_set")
                if name is None:
                    raise HTTPException(422, detail=[{"loc": ["body", f"{side}_prompts"], "type": "missing",
                                                      "msg": f"give {side}_prompts or a shipped {side}_set"}])
                prompts = load_set(name)
            out.append(prompts)
        return out[0], out[1]


class FeatureRowModel(BaseModel):
    index: int
    mean_concept: float
    mean_contrast: float
    fire_concept: float
    fire_contrast: float
    selectivity: float
    noisy: bool
    top_prompt: str | None = None


class FineInfo(BaseModel):
    selectivity: float
    mean_concept: float
    fire_concept: float
    source: Literal["top", "cosine", "both"]


class ScanModel(BaseModel):
    n_fine: int
    bin_edges: list[float]
    counts: list[list[int]]
    matches: list[list[tuple[int, float]]]
    floor: float
    max_cosine: list[float]


class MappingModel(BaseModel):
    coarse: list[int]
    fine: list[int]
    fine_info: dict[str, FineInfo]
    corr: list[list[float]]
    cos: list[list[float]]
    scan: ScanModel


class GoNoGo(BaseModel):
    coarse: int
    n_above: int
    go: bool
    best: list[tuple[int, float]]


class DiscoveryResponse(BaseModel):
    profile: str
    hook_name: str
    fingerprint: str
    set_hash: str
    n_concept: int
    n_contrast: int
    n_positions: int
    n_tokens_used: int
    seconds: float
    tokens_per_s: float | None
    aggregate: str
    widths: dict[str, int]
    tables: dict[str, list[FeatureRowModel]]
    mapping: MappingModel | None
    go_no_go: list[GoNoGo]
    go: bool


class JobStatus(BaseModel):
    job_id: str
    kind: str
    key: str
    state: Literal["queued", "running", "done", "error", "cancelled"]
    done: int
    total: int
    fraction: float
    elapsed_s: float
    eta_s: float | None
    cached: bool
    error: str | None
    result_url: str | None = None


def params_of(req: DiscoverRequest) -> disc.DiscoveryParams:
    return disc.DiscoveryParams(aggregate=req.aggregate, top_k=req.top_k, min_fire_rate=req.min_fire_rate,
                                n_coarse=req.n_coarse, n_fine=req.n_fine)


def collect_key(engine, set_hash: str) -> str:
    return f"collect|{engine.profile.name}|{engine.hook_name}|{engine.fingerprint}|{set_hash}"


def result_key(engine, set_hash: str, req: DiscoverRequest) -> str:
    knobs = {k: v for k, v in req.model_dump().items() if k in ("aggregate", "top_k", "min_fire_rate", "n_coarse", "n_fine", "cos_threshold")}
    h = hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:12]
    return f"discovery|{engine.profile.name}|{engine.fingerprint}|{set_hash}|{h}"


def collect(engine, settings, concept: list[str], contrast: list[str], progress=None, batch_size: int = 16) -> disc.CollectedStats:
    """Forward passes for both sets, the engine lock taken per batch (interactive requests interleave)."""
    ids = disc.encode_prompt_set(engine.tokenizer, concept + contrast, prepend_bos=engine.profile.name == "gemma-2-2b",
                                 max_tokens=settings.limits.max_prompt_tokens)
    return disc.collect_stats(engine.model, engine.saes, engine.hook_name, ids, len(concept),
                              sink_norm=engine.profile.sink_norm, batch_size=batch_size,
                              batch_context=engine.background_session, progress=progress)


def build_result(engine, collected: disc.CollectedStats, req: DiscoverRequest, set_hash: str, prompts=None) -> dict:
    with engine.background_session():
        res = disc.summarize(collected, engine.saes, params_of(req), prompts)
    scan = None
    if res["mapping"] is not None:
        m = res["mapping"]["scan"]
        scan = dec.CosineScan(tuple(res["mapping"]["coarse"]), m["n_fine"], tuple(m["bin_edges"]), tuple(map(tuple, m["counts"])),
                              tuple(tuple((int(a), float(b)) for a, b in row) for row in m["matches"]), m["floor"], tuple(m["max_cosine"]))
    gng = dec.go_no_go(scan, req.cos_threshold) if scan is not None else []
    res.update(profile=engine.profile.name, hook_name=engine.hook_name, fingerprint=engine.fingerprint, set_hash=set_hash,
               go_no_go=gng, go=any(g["go"] for g in gng))
    return DiscoveryResponse.model_validate(res).model_dump()


def run_discovery(engine, settings, req: DiscoverRequest, progress=None, runner: JobRunner | None = None) -> DiscoveryResponse:
    """Synchronous: collect (or reuse the runner's cached collection) then summarise."""
    concept, contrast = req.resolve()
    set_hash = disc.prompt_set_hash(concept, contrast)
    ckey = collect_key(engine, set_hash)
    collected = runner.cached(ckey) if runner is not None else None
    if collected is None:
        collected = collect(engine, settings, concept, contrast, progress)
        if runner is not None:
            runner.put_cache(ckey, collected)
    return DiscoveryResponse.model_validate(build_result(engine, collected, req, set_hash, concept + contrast))


def start_job(runner: JobRunner, engine, settings, req: DiscoverRequest) -> Job:
    """Start (or join, or answer from the cache) the discovery job for these inputs."""
    concept, contrast = req.resolve()
    set_hash = disc.prompt_set_hash(concept, contrast)
    key = result_key(engine, set_hash, req)

    def work(job: Job):
        return run_discovery(engine, settings, req, progress=job.progress, runner=runner).model_dump()

    return runner.submit(key, work, kind=KIND, total=len(concept) + len(contrast),
                         meta={"inputs": req.model_dump()})


def status_of(job: Job) -> JobStatus:
    s = job.status()
    s["result_url"] = f"/api/discover/jobs/{job.id}/result" if job.state == "done" else None
    return JobStatus.model_validate(s)


def _job_or_404(request: Request, job_id: str) -> Job:
    job = get_runner(request.app).get(job_id)
    if job is None or job.kind != KIND:
        raise HTTPException(404, detail=f"no discovery job {job_id!r}")
    return job


@router.get("/prompt-sets")
def prompt_sets() -> dict[str, int]:
    """The shipped prompt sets and their sizes."""
    return shipped_sets()


@router.post("", response_model=DiscoveryResponse)
def discover(req: DiscoverRequest, request: Request, engine: EngineDep, settings: SettingsDep) -> DiscoveryResponse:
    """Run discovery synchronously (uses and fills the same cache as the jobs)."""
    return run_discovery(engine, settings, req, runner=get_runner(request.app))


@router.post("/jobs", response_model=JobStatus, status_code=202)
def create_job(req: DiscoverRequest, request: Request, engine: EngineDep, settings: SettingsDep) -> JobStatus:
    """Start a background discovery job (or join the running one / answer from the cache)."""
    return status_of(start_job(get_runner(request.app), engine, settings, req))


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"description": "unknown job"}})
def job_status(job_id: str, request: Request) -> JobStatus:
    """Progress: prompts done / total, elapsed and ETA."""
    return status_of(_job_or_404(request, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobStatus, responses={404: {"description": "unknown job"}})
def cancel_job(job_id: str, request: Request) -> JobStatus:
    """Cancel: the job stops after its current batch."""
    _job_or_404(request, job_id)
    return status_of(get_runner(request.app).cancel(job_id))


@router.get("/jobs/{job_id}/result", response_model=DiscoveryResponse,
            responses={404: {"description": "unknown job"}, 409: {"description": "job not finished"}})
def job_result(job_id: str, request: Request) -> DiscoveryResponse:
    job = _job_or_404(request, job_id)
    if job.state != "done":
        raise HTTPException(409, detail=f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
    return DiscoveryResponse.model_validate(job.result)


def _register() -> None:
    try:
        from app.explorations_registry import register_view
    except ImportError:
        return
    try:
        from app.web.discover_pages import page_url as url_fn
    except ImportError:
        url_fn = None
    register_view(KIND, DiscoverRequest, run_discovery, "/discover", response_model=DiscoveryResponse, label="concept discovery",
                  url_fn=url_fn,
                  example={"concept_set": None, "contrast_set": None, "concept_prompts": ["Paris is in France.", "I love French cheese.", "The Eiffel Tower"],
                           "contrast_prompts": ["The cat sat down.", "Water is wet.", "A box of pens"], "n_coarse": 2, "n_fine": 5, "top_k": 5})


_register()
