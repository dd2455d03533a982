"""Streamed generation (SSE): a worker thread runs `run_generate` with callbacks and feeds an asyncio queue.

Running streams live in a `Streams` object (app/api/streams.py) on `app.state.streams`, created in the lifespan.
"""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Callable

from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from app.api.steering.schemas import GenerateRequest, GenerateResponse
from app.api.steering.service import run_generate
from app.api.streams import Streams
from app.engine.engine import EngineBusy
from app.engine.prompts import token_strings


def sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream_generation(streams: Streams, engine, settings, req: GenerateRequest,
                            extra: Callable[[GenerateResponse], dict] | None = None) -> StreamingResponse:
    """`start` {run_id, prompt_text, prompt_tokens}, one `token` {i, id, text, prob} per token, then `done` (the
    GenerateResponse) or `error`. Bad input raises (422) before anything streams; a busy engine raises 503.
    extra(response) -> {event: data}: more events sent just before `done` (the page's Save box)."""
    run_id = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()

    def put(kind, data):
        loop.call_soon_threadsafe(q.put_nowait, (kind, data))

    def on_start(ids, text):
        put("start", {"run_id": run_id, "prompt_text": text, "prompt_tokens": token_strings(engine.tokenizer, ids)})

    def on_token(i, t):
        put("token", {"i": i, "id": t.id, "text": t.text, "prob": t.prob})

    cancel = streams.begin(run_id)

    def worker():
        reason, n = None, 0
        try:
            resp = run_generate(engine, settings, req, cancel=cancel, on_start=on_start, on_token=on_token)
            reason, n = resp.generation.finish_reason, resp.generation.n_new
            for event, data in (extra(resp) if extra is not None else {}).items():
                put(event, data)
            put("done", resp.model_dump())
        except EngineBusy as exc:
            put("busy", exc)
        except HTTPException as exc:  # bad input found before the engine was taken
            put("invalid", exc)
        except Exception as exc:  # reported as an event; the session has already cleared the hooks
            reason = "error"
            put("error", {"detail": f"{type(exc).__name__}: {exc}"})
        finally:
            streams.end(run_id, reason, n)

    threading.Thread(target=worker, name=f"generate-{run_id[:8]}", daemon=True).start()
    kind, first = await q.get()
    if kind in ("busy", "invalid"):
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
