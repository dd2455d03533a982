"""The steering experiment as a service: run synchronously (re-run of a saved exploration) or as a background job
with progress, ETA and cancel (POST /api/experiment/jobs); CSV export of the table and the generations."""
from __future__ import annotations

import hashlib
import json

from app.api.errors import out_of_range, unprocessable
from app.api.experiment.schemas import KIND, ExperimentJobStatus, ExperimentRequest, ExperimentResponse
from app.api.jobs import run_here
from app.api.jobs import status_of as job_status
from app.api.limits import enforce_limits
from app.engine import discovery as disc
from app.engine import experiment as X
from app.jobs import Job, JobRunner
from app.viz.tables import write_csv


def set_name(req: ExperimentRequest, side: str, prompts: list[str]) -> str:
    """How the result names a set: its shipped name, or 'pasted, N prompts, sha:<hash>' (the address token)."""
    if getattr(req, f"{side}_prompts") is None and getattr(req, f"{side}_set"):
        return str(getattr(req, f"{side}_set"))
    return f"pasted, {len(prompts)} prompts, sha:{disc.prompt_set_hash(list(prompts), [])}"


def config_of(engine, settings, req: ExperimentRequest) -> X.ExperimentConfig:
    """Validated engine config: 404 for feature indices outside the SAEs, 422 for the work limit and layers."""
    enforce_limits(req, settings.limits)
    lim = settings.limits
    widths = {n: int(engine.saes[n].W_dec.shape[0]) for n in ("coarse", "fine")}
    if req.anchor >= widths["coarse"]:
        raise out_of_range(["body", "anchor"], f"coarse feature {req.anchor} does not exist; valid: 0..{widths['coarse'] - 1}")
    for i, j in enumerate(req.children or []):
        if not 0 <= j < widths["fine"]:
            raise out_of_range(["body", "children", i], f"fine feature {j} does not exist; valid: 0..{widths['fine'] - 1}")
    n_layers = engine.model.cfg.n_layers
    hook_layer = int(engine.hook_name.split(".")[1])
    if req.probe_layer is not None and (req.probe_layer >= n_layers or req.probe_layer == hook_layer):
        raise unprocessable(["body", "probe_layer"], f"probe_layer must be in 0..{n_layers - 1} and differ from the SAE's layer {hook_layer}")
    concept, contrast, evalp = req.resolve()
    cfg = X.ExperimentConfig(
        anchor=req.anchor, children=tuple(req.children or ()), eval_prompts=tuple(evalp), concept_prompts=tuple(concept),
        contrast_prompts=tuple(contrast), strengths=tuple(req.strengths), modes=tuple(dict.fromkeys(req.modes)),
        matched_norm=req.matched_norm, max_new_tokens=req.max_new_tokens, temperature=req.temperature, top_p=req.top_p,
        n_seeds=req.n_seeds, seed=req.seed, words=tuple(req.words), probe_layer=req.probe_layer, chat=req.chat,
        sink_norm=engine.profile.sink_norm, measure=req.measure, concept_name=set_name(req, "concept", concept),
        contrast_name=set_name(req, "contrast", contrast))
    n_seeds = cfg.n_seeds if cfg.temperature > 0 else 1
    work = len(evalp) * len(X.conditions_for(cfg)) * n_seeds * cfg.max_new_tokens
    if work > lim.max_experiment_tokens:
        raise unprocessable(["body", "n_prompts"],
                            f"{len(evalp)} prompts x {len(X.conditions_for(cfg))} conditions x {n_seeds} seed(s) x "
                            f"{cfg.max_new_tokens} tokens = {work} generated tokens; the limit is {lim.max_experiment_tokens} "
                            f"(max_experiment_tokens): fewer prompts, strengths, modes or tokens", "too_long")
    return cfg


def _response(engine, cfg: X.ExperimentConfig, result: dict) -> dict:
    res = {**result, "profile": engine.profile.name, "fingerprint": engine.fingerprint, "eval_prompts": list(cfg.eval_prompts)}
    return ExperimentResponse.model_validate(res).model_dump()


def n_work(cfg: X.ExperimentConfig) -> int:
    """Work units of a run (what progress counts): set prompts, validation texts twice, rows, rows scored thrice."""
    conds = X.conditions_for(cfg)
    rows = len(cfg.eval_prompts) * (cfg.n_seeds if cfg.temperature > 0 else 1) * len([c for c in conds if c.key not in X.aliases(conds)])
    n_val = 2 * min(cfg.n_validation, max(len(cfg.concept_prompts) - cfg.preface_k, 0)) if not cfg.validation_concept else 0
    return len(cfg.concept_prompts) + len(cfg.contrast_prompts) + n_val + 4 * rows


def compute(engine, cfg: X.ExperimentConfig, progress=None, cancel=None) -> dict:
    """The experiment with the engine lock taken per chunk (interactive requests interleave with a long run);
    cancel (a job's flag) also stops a chunk's generation between tokens."""
    return _response(engine, cfg, X.run_experiment(engine.model, engine.saes, engine.hook_name, cfg,
                                                   atlas=getattr(engine, "atlas", None), progress=progress,
                                                   cancel=cancel, batch_context=engine.background_session))


def run_experiment(engine, settings, req: ExperimentRequest, runner: JobRunner | None = None) -> ExperimentResponse:
    """Synchronous run (scripts, the saved exploration's Re-run); with a runner (POST /api/experiment) as a job of
    the request's thread, so a server stop interrupts it (503) instead of waiting it out."""
    cfg = config_of(engine, settings, req)
    if runner is None:
        return ExperimentResponse.model_validate(compute(engine, cfg))
    result = run_here(runner, job_key(engine, req), lambda job: compute(engine, cfg, job.progress, job.cancel_flag),
                      KIND, n_work(cfg), {"inputs": req.model_dump()})
    return ExperimentResponse.model_validate(result)


def job_key(engine, req: ExperimentRequest) -> str:
    h = hashlib.sha256(json.dumps(req.model_dump(), sort_keys=True).encode()).hexdigest()[:16]
    return f"{KIND}|{engine.profile.name}|{engine.fingerprint}|{h}"


def start_job(runner: JobRunner, engine, settings, req: ExperimentRequest) -> Job:
    """Start (or join, or answer from the cache) the experiment job for these inputs (seeded: same inputs, same result)."""
    cfg = config_of(engine, settings, req)

    def work(job: Job):
        return compute(engine, cfg, progress=job.progress, cancel=job.cancel_flag)

    return runner.submit(job_key(engine, req), work, kind=KIND, total=n_work(cfg), meta={"inputs": req.model_dump()})


def status_of(job: Job) -> ExperimentJobStatus:
    return job_status(job, "/api/experiment")


TABLE_COLUMNS = ("condition", "arm", "mode", "scale", "strength", "vector_norm", "concept", "concept_lo", "concept_hi",
                 "zeroshot", "zeroshot_lo", "zeroshot_hi", "probe", "probe_lo", "probe_hi",
                 "sae", "sae_lo", "sae_hi", "words", "words_lo", "words_hi", "logprob", "logprob_lo", "logprob_hi",
                 "fluency_ratio", "fluency_ratio_lo", "fluency_ratio_hi", "distinct2", "distinct2_lo", "distinct2_hi")
GENERATION_COLUMNS = ("prompt", "seed", "condition", "arm", "mode", "scale", "strength", "concept", "zeroshot", "probe", "sae", "words",
                      "logprob", "distinct2", "n_tokens", "finish", "text")


def to_csv(result: dict, what: str = "table") -> str:
    """CSV of the table (one row per condition, CIs as _lo/_hi) or of every generation."""
    if what == "table":
        rows = []
        for r in result["table"]:
            row = []
            for c in TABLE_COLUMNS:
                if c.endswith("_lo") or c.endswith("_hi"):
                    ci = r.get(c[:-3] + "_ci") or [None, None]
                    row.append(ci[0] if c.endswith("_lo") else ci[1])
                else:
                    row.append(r.get(c))
            rows.append(row)
        return write_csv(TABLE_COLUMNS, rows)
    return write_csv(GENERATION_COLUMNS, ([g.get(c) for c in GENERATION_COLUMNS] for g in result["generations"]))
