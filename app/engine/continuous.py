"""Continuous batching of generation requests on the fast Llama-style decoder: one batcher per Engine.

Concurrent requests (a generation, a steer's two runs, a dose sweep's strengths, other users') become rows of one
batched decode. A driver thread holds the engine session while it has rows: it prefills each row as it arrives
(alone, into its own KV-cache slot), then steps every live row together, one token per row per step. Rows join
and leave between steps, so a short request does not wait for a long one. Each row keeps its own position,
steering (additive vector and SAE clamps, with its own SteerOptions) and sampling generator, seeded as
`generation.generate` seeds it: a greedy row's tokens equal the unbatched `steering.steered_generate`'s
(tests/engine/test_continuous.py). While other work waits for the engine, no new rows join the running batch:
they start in the next one, after that work had its turn.

Models without the fast path, or a caller already holding the session, run the rows one at a time in the caller's
thread through `steering.steered_generate`, as before.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from app.engine.batched import RowSteer, batched_supported, row_steer
from app.engine.generation import Generation, GenerationRun, GenToken
from app.engine.sampling import SamplingParams, make_generator, sample_next
from app.engine.slots import RowsState, SlotDecoder, make_rows_steering_hook
from app.engine.steering import SteerOptions, steered_generate
from app.engine.tokens import token_text


@dataclass(eq=False)
class GenJob:
    """One row asked for, and (filled by the driver) what came of it."""

    prompt_ids: tuple[int, ...]
    features: tuple = ()  # steering.SteerFeature
    params: SamplingParams = SamplingParams()
    max_new_tokens: int = 16
    stop_ids: tuple[int, ...] = ()
    opts: SteerOptions = SteerOptions()
    cancel: threading.Event | None = None
    on_start: Callable[[], None] | None = None  # called once the row is admitted (the engine is working on it)
    on_token: Callable[[int, GenToken], None] | None = None
    run: GenerationRun = field(default_factory=GenerationRun)  # first_logits, finish_reason, seconds, decoder
    tokens: list = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    steer: RowSteer = RowSteer()
    logits: torch.Tensor | None = None  # the logits the next token is drawn from
    gen: torch.Generator | None = None
    t0: float = 0.0

    def generation(self, tokenizer) -> Generation:
        toks = tuple(self.tokens)
        return Generation(tuple(self.prompt_ids), toks, tokenizer.decode([t.id for t in toks]), self.run.finish_reason,
                          self.run.seconds, self.run.decoder)


class ContinuousBatcher:
    """Collects generation rows of concurrent requests and runs them as one continuously batched decode."""

    def __init__(self, engine, max_rows: int = 16, max_queued: int = 64, linger_s: float = 0.003, idle_s: float = 2.0,
                 busy: Callable[[], BaseException] = lambda: RuntimeError("the generation queue is full")):
        self.engine, self.max_rows, self.max_queued = engine, max_rows, max_queued
        self.linger_s, self.idle_s, self.busy = linger_s, idle_s, busy
        self._cond = threading.Condition()
        self._pending: list[GenJob] = []
        self._live = 0
        self._ended: list[GenJob] = []  # rows over, their requests not told yet (driver thread only)
        self._thread: threading.Thread | None = None

    def generate(self, jobs: Sequence[GenJob]) -> list[GenJob]:
        """Run the jobs (their rows batched with everyone else's); returns them filled, raises the first error."""
        eng = self.engine
        if not batched_supported(eng.model) or eng._owner == threading.get_ident():
            return self._unbatched(jobs)
        for j in jobs:
            j.steer = row_steer(eng.saes, j.features)
        with self._cond:
            if len(self._pending) + self._live + len(jobs) > self.max_queued:
                raise self.busy()
            self._pending.extend(jobs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="generation-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        for j in jobs:
            j.done.wait()
        for j in jobs:
            if j.error is not None:
                raise j.error
        return list(jobs)

    def _unbatched(self, jobs: Sequence[GenJob]) -> list[GenJob]:
        eng = self.engine
        held = eng._owner == threading.get_ident()
        with eng.session() if not held else contextlib.nullcontext():
            for j in jobs:
                if j.on_start is not None:
                    j.on_start()
                g = steered_generate(eng.model, eng.saes, eng.hook_name, j.prompt_ids, j.features, j.params, j.max_new_tokens,
                                     j.stop_ids, j.opts, cancel=j.cancel, run=j.run, on_token=j.on_token)
                j.tokens = list(g.tokens)
        return list(jobs)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._cond.wait(self.idle_s)
                if not self._pending:
                    self._thread = None
                    return
            time.sleep(self.linger_s)  # rows of requests arriving together start together
            try:
                with self.engine.session():
                    self._burst()
            except BaseException as exc:  # EngineBusy (no session in time): the rows waiting get it
                with self._cond:
                    failed, self._pending = self._pending, []
                for j in failed:
                    j.error = exc
                    j.done.set()
            self._release()  # the last rows' requests return once the engine is free again
            if self.engine._waiting:
                time.sleep(0.002)  # let the work that waited take the engine before the next batch

    def _burst(self) -> None:
        """Decode until no row is live; rows join between steps (unless other work waits for the engine)."""
        eng = self.engine
        model, tok = eng.model, eng.tokenizer
        state = RowsState()
        dec = SlotDecoder(model, state)
        live: list[GenJob] = []
        try:
            with model.hooks(fwd_hooks=[(eng.hook_name, make_rows_steering_hook(eng.saes, state))]):
                while True:
                    if not live or not eng._waiting:
                        with self._cond:
                            new = self._pending[: self.max_rows - len(live)]
                            del self._pending[: len(new)]
                            self._live += len(new)
                        for j in new:
                            self._admit(j, dec, state, live)
                    if not live:
                        return
                    self._release()
                    stepping = [self._next_token(j, tok) for j in live]
                    for slot in sorted((s for s, go in enumerate(stepping) if not go), reverse=True):
                        self._finish(live[slot])
                        dec.remove(slot)
                        live[slot] = live[-1]
                        live.pop()
                    if live:
                        state.positions = torch.tensor(dec.lens)[:, None]
                        state.prompt_lens = torch.tensor([len(j.prompt_ids) for j in live])
                        state.steers, state.opts = [j.steer for j in live], [j.opts for j in live]
                        logits = dec.step([j.tokens[-1].id for j in live]).float().cpu()
                        for j, row in zip(live, logits):
                            j.logits = row
        except Exception as exc:  # the rows in flight fail with it; the session clears the hooks, the next batch goes on
            for j in live:
                j.error = exc
                self._finish(j)

    def _admit(self, j: GenJob, dec: SlotDecoder, state: RowsState, live: list[GenJob]) -> None:
        j.t0 = time.perf_counter()
        j.run.decoder = SlotDecoder.name
        try:
            if j.on_start is not None:
                j.on_start()
            if j.cancel is not None and j.cancel.is_set():
                j.run.finish_reason = "cancelled"
                self._finish(j)
                return
            n = len(j.prompt_ids)
            state.positions, state.prompt_lens = torch.arange(n)[None], torch.tensor([n])
            state.steers, state.opts = [j.steer], [j.opts]
            j.logits = dec.prefill(j.prompt_ids, n + j.max_new_tokens).float().cpu()
        except Exception as exc:  # this row only (e.g. a callback failed): the others go on
            j.error = exc
            self._finish(j)
            return
        j.run.first_logits = j.logits
        j.gen = None if j.params.greedy else make_generator(j.params.seed)
        live.append(j)

    def _next_token(self, j: GenJob, tok) -> bool:
        """Draw the row's next token (as generation.iter_generate does); whether it needs another step."""
        if len(j.tokens) >= j.max_new_tokens:
            return False
        if j.cancel is not None and j.cancel.is_set():
            j.run.finish_reason = "cancelled"
            return False
        logits = j.logits
        assert logits is not None
        tid = sample_next(logits, j.params, j.gen)
        t = GenToken(tid, token_text(tok, tid), math.exp(float(logits[tid] - torch.logsumexp(logits, -1))))
        j.tokens.append(t)
        if j.on_token is not None:
            try:
                j.on_token(len(j.tokens) - 1, t)
            except Exception as exc:
                j.error = exc
                return False
        if tid in j.stop_ids:
            j.run.finish_reason = "stop"
            return False
        return len(j.tokens) < j.max_new_tokens

    def _finish(self, j: GenJob) -> None:
        """A row is over; its request is told at the next step, or once the session is released if none is left."""
        j.run.seconds = time.perf_counter() - j.t0
        with self._cond:
            self._live -= 1
        self._ended.append(j)

    def _release(self) -> None:
        ended, self._ended = self._ended, []
        for j in ended:
            j.done.set()

