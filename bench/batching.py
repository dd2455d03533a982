"""Continuous batching of generation, in one process: N users each send steer requests (two runs of 8 greedy tokens,
one steered), with the Engine's batcher on and off (off = one row at a time under the engine lock, the code before),
rounds interleaved; wall time per round, requests/s, p50/p95 per request, and whether the outputs agree.

    .venv/bin/python bench/batching.py [--users 8] [--rounds 4] [--tokens 8] [--json out.json]

Every request has a prompt not seen before (a new suffix per user and round). Load average recorded before/after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine.continuous import GenJob  # noqa: E402
from app.engine.engine import Engine  # noqa: E402
from app.engine.sampling import SamplingParams  # noqa: E402
from app.engine.steering import SteerFeature, SteerOptions  # noqa: E402

PROMPTS = ["The capital of France is Paris, and the Seine runs through it.",
           "Water boils at one hundred degrees Celsius at sea level.",
           "My favourite breakfast is toast with butter and a cup of tea.",
           "The train to Berlin leaves at seven o'clock from platform four."]


def steer_jobs(eng, prompt: str, index: int, tokens: int) -> list[GenJob]:
    ids = tuple(eng.tokenizer.encode(prompt, add_special_tokens=False))
    opts = SteerOptions(sink_norm=eng.profile.sink_norm)
    return [GenJob(ids, (), SamplingParams(), tokens, (), opts),
            GenJob(ids, (SteerFeature("coarse", index, "add", 4.0),), SamplingParams(), tokens, (), opts)]


def one_round(eng, users: int, tokens: int, tag: str) -> tuple[float, list[float], list]:
    lat: list[float] = [0.0] * users
    out: list = [None] * users

    def user(u):
        t0 = time.perf_counter()
        jobs = eng.generate_rows(steer_jobs(eng, f"{PROMPTS[u % len(PROMPTS)]} ({tag}.{u})", 10 + u, tokens))
        lat[u] = time.perf_counter() - t0
        out[u] = [[t.id for t in j.tokens] for j in jobs]

    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, lat, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(2)
    eng = Engine.build("smollm2-135m", "cpu", max_waiting=64, wait_timeout_s=600)
    eng.generate_rows(steer_jobs(eng, PROMPTS[0], 1, 2))  # warm-up
    load_before = os.getloadavg()
    walls: dict = {"batched": [], "one at a time (before)": []}
    lats: dict = {k: [] for k in walls}
    same = True
    for r in range(a.rounds):
        order = list(walls) if r % 2 == 0 else list(walls)[::-1]
        outs = {}
        for mode in order:
            eng.batching = mode == "batched"
            wall, lat, out = one_round(eng, a.users, a.tokens, f"r{r}")
            walls[mode].append(wall)
            lats[mode] += lat
            outs[mode] = out
        same &= outs["batched"] == outs["one at a time (before)"]
    res = {"users": a.users, "tokens": a.tokens, "rounds": a.rounds, "greedy_outputs_equal": same,
           "load_average_before": load_before, "load_average_after": os.getloadavg(), "runs": {}}
    for mode in walls:
        ls = sorted(lats[mode])
        res["runs"][mode] = {"wall_p50_s": statistics.median(walls[mode]), "requests_per_s": a.users * a.rounds / sum(walls[mode]),
                             "p50_s": statistics.median(ls), "p95_s": ls[min(len(ls) - 1, int(0.95 * len(ls)))]}
    b, o = res["runs"]["batched"], res["runs"]["one at a time (before)"]
    res["throughput_ratio"] = b["requests_per_s"] / o["requests_per_s"]
    res["p95_ratio"] = b["p95_s"] / o["p95_s"]
    for mode, r in res["runs"].items():
        print(f"{mode:24s} {r['requests_per_s']:.2f} req/s  p50 {r['p50_s']:.2f} s  p95 {r['p95_s']:.2f} s")
    print(f"throughput batched / before: {res['throughput_ratio']:.2f}; p95 ratio {res['p95_ratio']:.2f}; greedy outputs equal: {same}")
    print(f"load average before {load_before}, after {res['load_average_after']}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
