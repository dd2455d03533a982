"""Generation JSON routes and the SSE stream (thin: parse, call the service)."""
from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Path
from pydantic import BaseModel

from app.api.deps import EngineDep, SettingsDep, StreamsDep
from app.api.routing import post_service
from app.api.steering.schemas import CancelResponse, GenerateRequest
from app.api.steering.service import (
    run_dose,
    run_feature_info,
    run_generate,
    run_steer,
    run_system_shift,
    run_temperature,
)
from app.api.steering.stream import stream_generation

router = APIRouter(prefix="/api", tags=["generation"])


DOCS = {  # the operations' descriptions in the OpenAPI document
    "/generate": "Generate (optionally steered) in one response.",
    "/steer": "Steered and unsteered completions side by side (same seed and settings), divergence, next-token shift.",
    "/steer/feature": "A feature's activation scale on the prompt (the slider range) and the tokens it promotes.",
    "/dose": "Several strengths of one feature: completions, the next-token probabilities of the tokens that moved most "
             "across the strengths (what the chart plots) and of the tokens its decoder direction promotes.",
    "/temperature": "The next-token distribution at the end of the prompt at several temperatures, with top-k/top-p cuts.",
    "/system-shift": "How a system prompt moves the first-token distribution (table of probabilities and ranks).",
}
SERVICES: dict[str, Callable[..., BaseModel]] = {
    "/generate": run_generate, "/steer": run_steer, "/steer/feature": run_feature_info, "/dose": run_dose,
    "/temperature": run_temperature, "/system-shift": run_system_shift}
for _path, _service in SERVICES.items():
    post_service(router, _path, _service, DOCS[_path])


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
