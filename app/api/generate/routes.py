"""Generation JSON routes and the SSE stream (thin: parse, call the service)."""
from __future__ import annotations

from fastapi import APIRouter, Path

from app.api.deps import EngineDep, SettingsDep, StreamsDep
from app.api.generate.schemas import (
    CancelResponse,
    DoseRequest,
    DoseResponse,
    FeatureInfoRequest,
    FeatureInfoResponse,
    GenerateRequest,
    GenerateResponse,
    SteerRequest,
    SteerResponse,
    SystemShiftRequest,
    SystemShiftResponse,
    TemperatureRequest,
    TemperatureResponse,
)
from app.api.generate.service import (
    run_dose,
    run_feature_info,
    run_generate,
    run_steer,
    run_system_shift,
    run_temperature,
)
from app.api.generate.stream import stream_generation

router = APIRouter(prefix="/api", tags=["generation"])


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


@router.post("/generate/stream", responses={200: {"content": {"text/event-stream": {}}}})
async def generate_stream(req: GenerateRequest, engine: EngineDep, settings: SettingsDep, streams: StreamsDep):
    """Server-sent events: `start` {run_id, prompt_tokens}, one `token` {i, id, text, prob} per token, then
    `done` (the GenerateResponse) or `error`. POST /api/generate/cancel/{run_id}, or closing the connection,
    stops the work before the next token."""
    return await stream_generation(streams, engine, settings, req)


@router.post("/generate/cancel/{run_id}", response_model=CancelResponse)
def cancel_generation(streams: StreamsDep, run_id: str = Path(max_length=64)) -> CancelResponse:
    """Stop a streaming run; false when no such run is in progress (already finished)."""
    return CancelResponse(run_id=run_id, cancelled=streams.cancel(run_id))
