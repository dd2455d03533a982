"""Generation, steering, dose-response, temperature and system-prompt views as JSON (and SSE for streaming)."""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import OrderedDict
from typing import Literal

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.analysis import encode_checked
from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import FiniteModel, PromptFields
from app.engine import generation as G
from app.engine import sampling as S
from app.engine import steering as ST
from app.engine.engine import EngineBusy
from app.engine.prompts import encode_prompt, token_strings
from app.settings import get_settings

router = APIRouter(prefix="/api", tags=["generation"])
L = get_settings().limits
SaeName = Literal["coarse", "fine"]


# ---------------------------------------------------------------- requests
class SteerFeatureModel(FiniteModel):
    model_config = ConfigDict(extra="forbid")

    sae: SaeName = "coarse"
    index: int = Field(ge=0, description="feature index in that SAE (0 .. width-1)")
    mode: Literal["add", "clamp"] = Field(default="add", description="add: x += c*W_dec[f]; clamp: set the SAE activation a_f to v, keeping the SAE error")
    value: float = Field(default=0.0, ge=-L.max_steering_strength, le=L.max_steering_strength,
                         description=f"c (add) or v (clamp), in units of the feature's activation; |value| <= {L.max_steering_strength}")


class SamplingFields(FiniteModel):
    max_new_tokens: int = Field(default=32, ge=1, le=L.max_new_tokens, description=f"1 .. {L.max_new_tokens}")
    temperature: float = Field(default=0.0, ge=0.0, le=L.max_temperature, description="0 = greedy")
    top_k: int = Field(default=0, ge=0, le=L.max_top_k, description="0 = off")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="1 = off")
    seed: int = Field(default=0, ge=0, le=L.max_seed)

    def sampling(self) -> S.SamplingParams:
        return S.SamplingParams(self.temperature, self.top_k, self.top_p, self.seed)


class SteeringFields(FiniteModel):
    steering: list[SteerFeatureModel] = Field(default_factory=list, max_length=L.max_steering_features,
                                              description=f"at most {L.max_steering_features} features")
    generated_only: bool = Field(default=False, description="steer only the positions that predict generated tokens")
    skip_sinks: bool = Field(default=True, description="leave position 0 (attention sink) and massive-norm positions unsteered")


class GenerateRequest(PromptFields, SamplingFields, SteeringFields):
    pass


class SteerRequest(GenerateRequest):
    top_n: int = Field(default=10, ge=1, le=L.max_features_shown)


class DoseRequest(PromptFields, SamplingFields):
    feature: SteerFeatureModel
    strengths: list[float] = Field(min_length=2, max_length=L.max_dose_points, description=f"2 .. {L.max_dose_points} values")
    generated_only: bool = False
    skip_sinks: bool = True
    promoted_top: int = Field(default=5, ge=1, le=20)

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, v):
        for s in v:
            if not (abs(s) <= L.max_steering_strength):
                raise ValueError(f"each strength must be finite with |value| <= {L.max_steering_strength}")
        return v


class TemperatureRequest(PromptFields, SteeringFields):
    temperatures: list[float] = Field(default_factory=lambda: [0.2, 0.7, 1.0, 1.5], min_length=1, max_length=L.max_temperatures,
                                      description=f"1 .. {L.max_temperatures} temperatures in (0, {L.max_temperature}]")
    top_k: int = Field(default=0, ge=0, le=L.max_top_k)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_n: int = Field(default=12, ge=1, le=L.max_features_shown, description="tokens shown")

    @field_validator("temperatures")
    @classmethod
    def _temps(cls, v):
        for t in v:
            if not (0.0 < t <= L.max_temperature):
                raise ValueError(f"each temperature must be in (0, {L.max_temperature}]")
        return v


class SystemShiftRequest(SteeringFields):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=L.max_prompt_chars)
    system_a: str | None = Field(default=None, max_length=L.max_system_prompt_chars, description="None/empty: no system prompt")
    system_b: str | None = Field(default=None, max_length=L.max_system_prompt_chars)
    chat: bool = Field(default=True, description="use the chat template for both")
    top_n: int = Field(default=10, ge=1, le=L.max_features_shown)


class FeatureInfoRequest(PromptFields):
    sae: SaeName = "coarse"
    index: int = Field(ge=0)
    skip_sinks: bool = True


# ---------------------------------------------------------------- responses
class TokenOut(BaseModel):
    id: int
    text: str
    prob: float


class GenerationOut(BaseModel):
    tokens: list[TokenOut]
    text: str
    finish_reason: str
    n_new: int
    seconds: float
    tokens_per_s: float | None
    decoder: str


class GenerateResponse(BaseModel):
    profile: str
    hook_name: str
    prompt_text: str
    prompt_tokens: list[str]
    generation: GenerationOut


class ShiftRowOut(BaseModel):
    token_id: int
    token: str
    p_a: float
    p_b: float
    delta: float
    rank_a: int
    rank_b: int


class SteerResponse(BaseModel):
    profile: str
    hook_name: str
    prompt_text: str
    prompt_tokens: list[str]
    unsteered: GenerationOut
    steered: GenerationOut
    diverged: list[bool]  # per generated position: the two tokens differ (or one run has ended)
    first_divergence: int | None
    shift: list[ShiftRowOut]  # next-token distribution at the end of the prompt, unsteered (a) vs steered (b)


class PromotedOut(BaseModel):
    token_id: int
    token: str
    logit_weight: float  # (W_dec[f] @ W_U)[token]
    probs: list[float]  # next-token probability at the end of the prompt, per strength


class DoseResponse(BaseModel):
    profile: str
    hook_name: str
    prompt_text: str
    strengths: list[float]
    completions: list[GenerationOut]
    promoted: list[PromotedOut]
    top_next: list[TokenOut]  # the most probable next token at each strength


class TokenRef(BaseModel):
    id: int
    token: str


class TemperatureViewOut(BaseModel):
    temperature: float
    entropy_bits: float
    probs: list[float]
    kept: list[bool]
    renormalised: list[float]
    n_kept: int
    entropy_kept_bits: float


class TemperatureResponse(BaseModel):
    profile: str
    prompt_text: str
    tokens: list[TokenRef]  # the top tokens at temperature 1
    views: list[TemperatureViewOut]
    top_k: int
    top_p: float
    steered: bool


class SystemShiftResponse(BaseModel):
    profile: str
    text_a: str
    text_b: str
    rows: list[ShiftRowOut]
    entropy_a_bits: float
    entropy_b_bits: float
    steered: bool


class FeatureInfoResponse(BaseModel):
    sae: str
    index: int
    width: int
    max_on_prompt: float
    typical_max: float
    source: str
    slider_min: float
    slider_max: float
    promoted: list[TokenRef]


# ---------------------------------------------------------------- shared with the HTML pages
def _unprocessable(loc: list, msg: str):
    return HTTPException(422, detail=[{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def check_features(engine, feats: list[SteerFeatureModel], field: str = "steering") -> list[ST.SteerFeature]:
    out = []
    for i, f in enumerate(feats):
        width = int(engine.saes[f.sae].cfg.d_sae)
        if f.index >= width:
            raise _unprocessable([field, i, "index"] if field == "steering" else [field, "index"],
                                 f"feature index {f.index} is out of range: the {f.sae} SAE has {width} features (0 .. {width - 1})")
        out.append(ST.SteerFeature(f.sae, f.index, f.mode, f.value))
    return out


def _opts(engine, generated_only: bool, skip_sinks: bool) -> ST.SteerOptions:
    return ST.SteerOptions(generated_only=generated_only, skip_first=skip_sinks,
                           sink_norm=engine.profile.sink_norm if skip_sinks else None)


def gen_out(g: G.Generation) -> GenerationOut:
    return GenerationOut(tokens=[TokenOut(id=t.id, text=t.text, prob=t.prob) for t in g.tokens], text=g.text,
                         finish_reason=g.finish_reason, n_new=len(g.tokens), seconds=g.seconds,
                         tokens_per_s=(g.tokens_per_s if g.seconds > 0 else None), decoder=g.decoder)


def shift_rows(probs_a, probs_b, tokenizer, top_n) -> list[ShiftRowOut]:
    return [ShiftRowOut(token_id=r.token_id, token=r.token, p_a=r.p_a, p_b=r.p_b, delta=r.delta, rank_a=r.rank_a, rank_b=r.rank_b)
            for r in S.distribution_shift(probs_a, probs_b, tokenizer, top_n)]


def run_generate(engine, settings, req: GenerateRequest, cancel=None) -> GenerateResponse:
    ids, text = encode_checked(engine, settings, req)
    feats = check_features(engine, req.steering)
    stops = G.stop_token_ids(engine.tokenizer)
    with engine.session():
        g = ST.steered_generate(engine.model, engine.saes, engine.hook_name, ids, feats, req.sampling(), req.max_new_tokens,
                                stops, _opts(engine, req.generated_only, req.skip_sinks), cancel=cancel)
    return GenerateResponse(profile=engine.profile.name, hook_name=engine.hook_name, prompt_text=text,
                            prompt_tokens=token_strings(engine.tokenizer, ids), generation=gen_out(g))


def run_steer(engine, settings, req: SteerRequest) -> SteerResponse:
    """Unsteered and steered runs with the same seed and settings, their divergence, and the next-token shift."""
    ids, text = encode_checked(engine, settings, req)
    feats = check_features(engine, req.steering)
    stops = G.stop_token_ids(engine.tokenizer)
    opts = _opts(engine, req.generated_only, req.skip_sinks)
    ra, rb = G.GenerationRun(), G.GenerationRun()
    with engine.session():
        a = G.generate(engine.model, ids, req.max_new_tokens, req.sampling(), stops, run=ra)
        b = ST.steered_generate(engine.model, engine.saes, engine.hook_name, ids, feats, req.sampling(), req.max_new_tokens,
                                stops, opts, run=rb)
    n = max(len(a.ids), len(b.ids))
    diverged = [i >= len(a.ids) or i >= len(b.ids) or a.ids[i] != b.ids[i] for i in range(n)]
    first = next((i for i, d in enumerate(diverged) if d), None)
    return SteerResponse(profile=engine.profile.name, hook_name=engine.hook_name, prompt_text=text,
                         prompt_tokens=token_strings(engine.tokenizer, ids), unsteered=gen_out(a), steered=gen_out(b),
                         diverged=diverged, first_divergence=first,
                         shift=shift_rows(ra.first_logits.softmax(-1), rb.first_logits.softmax(-1), engine.tokenizer, req.top_n))


def run_dose(engine, settings, req: DoseRequest) -> DoseResponse:
    """One generation per strength; the next-token distribution of each run's prompt pass gives the curves."""
    ids, text = encode_checked(engine, settings, req)
    (feat,) = check_features(engine, [req.feature], field="feature")
    stops = G.stop_token_ids(engine.tokenizer)
    opts = _opts(engine, req.generated_only, req.skip_sinks)
    comps, probs = [], []
    with engine.session():
        sae = engine.saes[feat.sae]
        logit_dir = sae.W_dec[feat.index].float() @ engine.model.W_U.float()
        pv, pi = logit_dir.topk(req.promoted_top)
        for s in req.strengths:
            run = G.GenerationRun()
            f = ST.SteerFeature(feat.sae, feat.index, feat.mode, float(s))
            comps.append(ST.steered_generate(engine.model, engine.saes, engine.hook_name, ids, [f], req.sampling(),
                                             req.max_new_tokens, stops, opts, run=run))
            probs.append(run.first_logits.softmax(-1))
    tok = engine.tokenizer
    promoted = [PromotedOut(token_id=int(i), token=tok.decode([int(i)]), logit_weight=float(v), probs=[float(p[int(i)]) for p in probs])
                for v, i in zip(pv, pi)]
    top_next = []
    for p in probs:
        j = int(p.argmax())
        top_next.append(TokenOut(id=j, text=tok.decode([j]), prob=float(p[j])))
    return DoseResponse(profile=engine.profile.name, hook_name=engine.hook_name, prompt_text=text, strengths=list(req.strengths),
                        completions=[gen_out(c) for c in comps], promoted=promoted, top_next=top_next)


def run_temperature(engine, settings, req: TemperatureRequest) -> TemperatureResponse:
    """One forward pass (the generation decoder's prompt pass); re-softmaxed at each temperature."""
    ids, text = encode_checked(engine, settings, req)
    feats = check_features(engine, req.steering)
    with engine.session():
        logits = ST.steered_next_token_logits(engine.model, engine.saes, engine.hook_name, ids, feats,
                                              _opts(engine, req.generated_only, req.skip_sinks))
    top = logits.topk(min(req.top_n, logits.shape[-1])).indices.tolist()
    views = S.temperature_views(logits, req.temperatures, top, req.top_k, req.top_p)
    tok = engine.tokenizer
    return TemperatureResponse(
        profile=engine.profile.name, prompt_text=text, tokens=[TokenRef(id=i, token=tok.decode([i])) for i in top],
        views=[TemperatureViewOut(temperature=v.temperature, entropy_bits=v.entropy_bits, probs=list(v.probs), kept=list(v.kept),
                                  renormalised=list(v.renormalised), n_kept=v.n_kept, entropy_kept_bits=v.entropy_kept_bits) for v in views],
        top_k=req.top_k, top_p=req.top_p, steered=bool(feats))


def run_system_shift(engine, settings, req: SystemShiftRequest) -> SystemShiftResponse:
    """The same user prompt under system prompt A and B (either may be none): next-token table with both
    probabilities, the change and the rank movement (optionally both under the same steering)."""
    feats = check_features(engine, req.steering)
    encoded = []
    for field, sys_prompt in (("system_a", req.system_a), ("system_b", req.system_b)):
        ep = encode_prompt(engine.tokenizer, req.prompt, sys_prompt or None, req.chat,
                           prepend_bos=engine.profile.name == "gemma-2-2b")
        if len(ep.token_ids) > settings.limits.max_prompt_tokens:
            raise _unprocessable([field], f"prompt with {field} has {len(ep.token_ids)} tokens; the limit is {settings.limits.max_prompt_tokens}")
        encoded.append(ep)
    opts = _opts(engine, req.generated_only, req.skip_sinks)
    with engine.session():
        la, lb = [ST.steered_next_token_logits(engine.model, engine.saes, engine.hook_name, ep.token_ids, feats, opts) for ep in encoded]
    pa, pb = la.softmax(-1), lb.softmax(-1)
    return SystemShiftResponse(profile=engine.profile.name, text_a=encoded[0].text, text_b=encoded[1].text,
                               rows=shift_rows(pa, pb, engine.tokenizer, req.top_n),
                               entropy_a_bits=S.entropy_bits(pa), entropy_b_bits=S.entropy_bits(pb), steered=bool(feats))


def run_feature_info(engine, settings, req: FeatureInfoRequest) -> FeatureInfoResponse:
    ids, _ = encode_checked(engine, settings, req)
    width = int(engine.saes[req.sae].cfg.d_sae)
    if req.index >= width:
        raise _unprocessable(["index"], f"feature index {req.index} is out of range: the {req.sae} SAE has {width} features (0 .. {width - 1})")
    with engine.session():
        fs = ST.feature_scale(engine.model, engine.saes, engine.hook_name, req.sae, req.index, ids,
                              _opts(engine, False, req.skip_sinks))
    lim = settings.limits.max_steering_strength
    span = min(3.0 * fs.typical_max, lim)
    return FeatureInfoResponse(sae=req.sae, index=req.index, width=int(engine.saes[req.sae].cfg.d_sae), max_on_prompt=fs.max_on_prompt,
                               typical_max=fs.typical_max, source=fs.source, slider_min=-span, slider_max=span,
                               promoted=[TokenRef(id=i, token=t) for i, t, _ in fs.promoted])


# ---------------------------------------------------------------- routes
@router.post("/generate", response_model=GenerateResponse)
def generate(req: GenerateRequest, engine: EngineDep, settings: SettingsDep) -> GenerateResponse:
    """Generate (optionally steered) in one response."""
    return run_generate(engine, settings, req)


@router.post("/steer", response_model=SteerResponse)
def steer(req: SteerRequest, engine: EngineDep, settings: SettingsDep) -> SteerResponse:
    """Steered and unsteered completions side by side (same seed and settings), divergence, next-token shift."""
    return run_steer(engine, settings, req)


@router.post("/steer/feature", response_model=FeatureInfoResponse)
def steer_feature(req: FeatureInfoRequest, engine: EngineDep, settings: SettingsDep) -> FeatureInfoResponse:
    """A feature's activation scale on the prompt (the slider range) and the tokens it promotes."""
    return run_feature_info(engine, settings, req)


@router.post("/dose", response_model=DoseResponse)
def dose(req: DoseRequest, engine: EngineDep, settings: SettingsDep) -> DoseResponse:
    """Several strengths of one feature: completions and the probabilities of its top promoted tokens."""
    return run_dose(engine, settings, req)


@router.post("/temperature", response_model=TemperatureResponse)
def temperature(req: TemperatureRequest, engine: EngineDep, settings: SettingsDep) -> TemperatureResponse:
    """The next-token distribution at the end of the prompt at several temperatures, with top-k/top-p cuts."""
    return run_temperature(engine, settings, req)


@router.post("/system-shift", response_model=SystemShiftResponse)
def system_shift(req: SystemShiftRequest, engine: EngineDep, settings: SettingsDep) -> SystemShiftResponse:
    """How a system prompt moves the first-token distribution (table of probabilities and ranks)."""
    return run_system_shift(engine, settings, req)


# ---------------------------------------------------------------- streaming (SSE)
ACTIVE_RUNS: dict[str, threading.Event] = {}
RECENT_RUNS: "OrderedDict[str, tuple[str, int]]" = OrderedDict()  # run_id -> (finish_reason, tokens), last 64 runs


def _finished(run_id: str, reason: str, n: int) -> None:
    RECENT_RUNS[run_id] = (reason, n)
    while len(RECENT_RUNS) > 64:
        RECENT_RUNS.popitem(last=False)


def sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.post("/generate/stream", responses={200: {"content": {"text/event-stream": {}}}})
async def generate_stream(req: GenerateRequest, request: Request, engine: EngineDep, settings: SettingsDep):
    """Server-sent events: `start` {run_id, prompt_tokens}, one `token` {i, id, text, prob} per token, then
    `done` (the GenerateResponse) or `error`. POST /api/generate/cancel/{run_id}, or closing the connection,
    stops the work before the next token."""
    ids, text = encode_checked(engine, settings, req)
    feats = check_features(engine, req.steering)
    cancel = threading.Event()
    run_id = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()

    def put(kind, data):
        loop.call_soon_threadsafe(q.put_nowait, (kind, data))

    def worker():
        try:
            with engine.session():
                put("start", {"run_id": run_id, "prompt_text": text, "prompt_tokens": token_strings(engine.tokenizer, ids)})
                state = G.PositionState()
                run = G.GenerationRun()
                hooks = ST.steering_hooks(engine.hook_name, engine.saes, feats, state, _opts(engine, req.generated_only, req.skip_sinks))
                toks = []
                with engine.model.hooks(fwd_hooks=hooks):
                    for i, t in enumerate(G.iter_generate(engine.model, ids, req.max_new_tokens, req.sampling(),
                                                          G.stop_token_ids(engine.tokenizer), cancel, state, run)):
                        toks.append(t)
                        put("token", {"i": i, "id": t.id, "text": t.text, "prob": t.prob})
                g = G.Generation(tuple(ids), tuple(toks), engine.tokenizer.decode([t.id for t in toks]), run.finish_reason, run.seconds, run.decoder)
                resp = GenerateResponse(profile=engine.profile.name, hook_name=engine.hook_name, prompt_text=text,
                                        prompt_tokens=token_strings(engine.tokenizer, ids), generation=gen_out(g))
                _finished(run_id, run.finish_reason, len(toks))
                put("done", resp.model_dump())
        except EngineBusy as exc:
            put("busy", exc)
        except Exception as exc:  # reported as an event; the session has already cleared the hooks
            _finished(run_id, "error", 0)
            put("error", {"detail": f"{type(exc).__name__}: {exc}"})
        finally:
            ACTIVE_RUNS.pop(run_id, None)

    ACTIVE_RUNS[run_id] = cancel
    threading.Thread(target=worker, name=f"generate-{run_id[:8]}", daemon=True).start()
    kind, first = await q.get()
    if kind == "busy":
        raise first
    if kind == "error":
        raise HTTPException(400, detail=first["detail"])

    async def events():
        try:
            yield sse(kind, first)
            while True:
                k, data = await q.get()
                yield sse(k, data)
                if k in ("done", "error"):
                    break
        finally:
            cancel.set()  # finished, or the client went away: either way the worker stops before its next token

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class CancelResponse(BaseModel):
    run_id: str
    cancelled: bool


@router.post("/generate/cancel/{run_id}", response_model=CancelResponse)
def cancel_generation(run_id: str = Path(max_length=64)) -> CancelResponse:
    """Stop a streaming run; false when no such run is in progress (already finished)."""
    ev = ACTIVE_RUNS.get(run_id)
    if ev is not None:
        ev.set()
    return CancelResponse(run_id=run_id, cancelled=ev is not None)


def _register() -> None:
    """Make the generation views re-runnable and forkable from saved explorations."""
    from app.explorations_registry import register_view

    prompt = {"prompt": "Once upon a time", "max_new_tokens": 4, "temperature": 0.0, "seed": 0}
    feat = {"sae": "coarse", "index": 5, "mode": "add", "value": 8.0}
    views = [
        ("generation", GenerateRequest, run_generate, GenerateResponse, "generate", {**prompt, "steering": [feat]}),
        ("steering", SteerRequest, run_steer, SteerResponse, "steer", {**prompt, "steering": [feat]}),
        ("dose", DoseRequest, run_dose, DoseResponse, "dose", {**prompt, "feature": feat, "strengths": [-8.0, 0.0, 8.0]}),
        ("temperature", TemperatureRequest, run_temperature, TemperatureResponse, "temperature",
         {"prompt": "Once upon a time", "temperatures": [0.5, 1.0], "top_k": 5}),
        ("system_shift", SystemShiftRequest, run_system_shift, SystemShiftResponse, "system_shift",
         {"prompt": "Which queue should I use?", "system_a": None, "system_b": "You are a Kafka expert."}),
    ]
    for kind, req, fn, resp, view, example in views:
        page = "/temperature" if kind in ("temperature", "system_shift") else "/generate"
        register_view(kind, req, fn, page, response_model=resp, example=example, label=kind.replace("_", " "),
                      volatile=("seconds", "tokens_per_s"))


_register()
