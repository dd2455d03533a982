"""`python -m app.cli.artifacts --profile P`: rebuild everything derived from the profile's SAE pair, in order.

1. atlas   `python -m app atlas` (the compact atlas; the split maps read its co-firing sample, so they are rebuilt
           with it, and the app refuses an atlas built for other SAEs by fingerprint)
2. map     `python -m app map` (layout.npz beside the atlas, same fingerprint rule)
3. france  `python -m app.training.concepts` -> docs/france-table.txt (+ the steering anchor it picks, france.json)
4. experiment `python -m app.training.steering_suite` (France, cooking, programming, each anchored by its own Discover
           run; then the report) -> docs/steering-experiment-<concept>.txt/.json, docs/steering-experiment.md/.svg
5. attribution `python -m app.engine.attribution` -> docs/attribution-rome.txt

Then docs/artifacts.json: the SAE fingerprint the files were built for, each file's sha256 and the commands, so a
file from another pair is told apart (`check_artifacts`). `--steps` runs some of them; `--dry-run` prints the commands;
`--quick` shrinks every step (tests on the tiny profile); extra arguments per step with `--atlas-args "..."` etc.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from app.core.settings import ROOT

DOCS = ROOT / "docs"  # the checkout's docs/, where the shipped artifacts live
STEPS = ("atlas", "map", "france", "experiment", "attribution")
QUICK = {"atlas": ["--tokens", "2048"], "france": ["--top", "5"],
         "experiment": ["--concepts", "france", "--prompts", "2", "--seeds", "1", "--strengths", "2", "--tokens", "4",
                        "--label", "quick run"], "attribution": ["--top", "5", "--validate", "2"]}


def sae_fingerprint(profile: str) -> str:
    """The atlas fingerprint of the profile's SAEs (profile, hook, SAE weights), without loading the model."""
    from app.cli.map import load_decoders
    from app.engine.atlas import atlas_fingerprint

    _, fp, prof = load_decoders(profile)
    return atlas_fingerprint(prof.name, prof.hook_name, fp)


def commands(profile: str, docs: Path, extra: dict[str, list[str]]) -> dict[str, list[str]]:
    py = [sys.executable]
    return {
        "atlas": py + ["-m", "app", "atlas", "--profile", profile] + extra.get("atlas", []),
        "map": py + ["-m", "app", "map", "--profile", profile] + extra.get("map", []),
        "france": py + ["-m", "app.training.concepts", "--profile", profile, "--json", str(docs / "france.json")]
        + extra.get("france", []),
        "experiment": py + ["-m", "app.training.steering_suite", "--profile", profile, "--out", str(docs)]
        + extra.get("experiment", []),
        "attribution": py + ["-m", "app.engine.attribution", "--profile", profile] + extra.get("attribution", []),
    }


OUTPUTS = {"france": "france-table.txt", "attribution": "attribution-rome.txt"}  # the step's standard output
EXPERIMENT_FILES = "steering-experiment*"  # what the experiment step writes (per concept, the report and its figure)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_artifacts(docs: Path, fingerprint: str) -> list[str]:
    """Lines naming what in docs/artifacts.json is stale (other SAEs) or changed since; [] when all is current."""
    f = docs / "artifacts.json"
    if not f.exists():
        return [f"{f} is missing: run `make artifacts`"]
    man = json.loads(f.read_text())
    out = []
    if man.get("fingerprint") != fingerprint:
        out.append(f"built for {man.get('fingerprint')}, the SAEs are {fingerprint}: run `make artifacts`")
    for name, h in man.get("files", {}).items():
        p = docs / name
        if not p.exists() or sha256(p) != h:
            out.append(f"{name} changed or is missing since `make artifacts`")
    return out


def run(profile: str, docs: Path, steps: list[str], extra: dict[str, list[str]], dry_run: bool = False) -> int:
    fp = sae_fingerprint(profile)
    docs.mkdir(parents=True, exist_ok=True)
    man_path = docs / "artifacts.json"
    man = json.loads(man_path.read_text()) if man_path.exists() else {}
    if man.get("fingerprint") != fp:
        man = {"fingerprint": fp, "files": {}, "commands": {}}
    for step in STEPS:
        if step not in steps:
            continue
        cmd = commands(profile, docs, extra)[step]
        print("$ " + shlex.join(cmd), flush=True)
        if dry_run:
            continue
        t0 = time.perf_counter()
        out = docs / OUTPUTS[step] if step in OUTPUTS else None
        with (out.open("w", encoding="utf-8") if out else open(os.devnull, "w")) as fh:
            rc = subprocess.run(cmd, stdout=fh if out else None, check=False).returncode
        if rc != 0:
            print(f"{step}: exit status {rc}", file=sys.stderr)
            return rc
        print(f"  {step} done in {time.perf_counter() - t0:.0f} s", flush=True)
        man["commands"][step] = shlex.join(cmd[1:])
        for name in ([OUTPUTS[step]] if step in OUTPUTS else []) + (["france.json"] if step == "france" else []) + \
                (sorted(p.name for p in docs.glob(EXPERIMENT_FILES)) if step == "experiment" else []):
            man["files"][name] = sha256(docs / name)
    if not dry_run:
        man["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        man_path.write_text(json.dumps(man, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.cli.artifacts", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--docs", type=Path, default=DOCS)
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated, of " + ", ".join(STEPS))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small versions of every step (tests)")
    ap.add_argument("--check", action="store_true", help="only say whether docs/artifacts.json is current")
    for s in STEPS:
        ap.add_argument(f"--{s}-args", default="", help=f"extra arguments for the {s} step")
    a = ap.parse_args(argv)
    if a.check:
        lines = check_artifacts(a.docs, sae_fingerprint(a.profile))
        print("\n".join(lines) or "artifacts current")
        return 1 if lines else 0
    steps = [s.strip() for s in a.steps.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        print(f"--steps: unknown {', '.join(bad)}; choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    extra = {s: (QUICK.get(s, []) if a.quick else []) + shlex.split(getattr(a, f"{s}_args")) for s in STEPS}
    return run(a.profile, a.docs, steps, extra, a.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
