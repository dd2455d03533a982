"""`python -m app.cli.artifacts`: every artifact of the SAE pair rebuilt in order, and a manifest that tells stale files."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from app.cli import artifacts


def test_dry_run_lists_every_builder_in_order(tmp_path, capsys):
    assert artifacts.main(["--profile", "tiny", "--docs", str(tmp_path), "--dry-run"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("$ ")]
    mods = [ln.split(" -m ")[1].split()[0] + (" " + ln.split(" -m ")[1].split()[1] if " -m app " in ln else "")
            for ln in lines]
    assert mods == ["app atlas", "app map", "app.training.concepts", "app.training.steering_suite", "app.engine.attribution"]
    assert f"--out {tmp_path}" in lines[3] and f"--json {tmp_path / 'france.json'}" in lines[2]
    assert not (tmp_path / "artifacts.json").exists()


def test_manifest_records_the_pair_and_each_file_and_check_tells_stale_ones(tmp_path, monkeypatch, tiny_engine):
    from app.engine.atlas import atlas_fingerprint

    ran = []

    def fake_run(cmd, stdout=None, check=False):  # each builder writes what it writes; no model run here
        ran.append(cmd[2])
        if cmd[2] == "app.training.concepts":
            (tmp_path / "france.json").write_text(json.dumps({"go": True, "anchor": 5}))
        if cmd[2] == "app.training.steering_suite":
            for name in ("steering-experiment-france.json", "steering-experiment-france.txt", "steering-experiment.md"):
                (tmp_path / name).write_text(name)
        if stdout is not None:
            stdout.write(f"report of {cmd[2]}\n")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(artifacts.subprocess, "run", fake_run)
    assert artifacts.main(["--profile", "tiny", "--docs", str(tmp_path), "--steps", "france,experiment,attribution"]) == 0
    assert ran == ["app.training.concepts", "app.training.steering_suite", "app.engine.attribution"]
    man = json.loads((tmp_path / "artifacts.json").read_text())
    fp = atlas_fingerprint("tiny", tiny_engine.hook_name, tiny_engine.fingerprint)  # the engine's own fingerprint
    assert man["fingerprint"] == fp
    assert set(man["files"]) == {"france-table.txt", "france.json", "steering-experiment-france.txt",
                                 "steering-experiment-france.json", "steering-experiment.md", "attribution-rome.txt"}
    for name, h in man["files"].items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == h
    assert (tmp_path / "attribution-rome.txt").read_text() == "report of app.engine.attribution\n"
    assert man["commands"]["experiment"].startswith("-m app.training.steering_suite --profile tiny")
    assert artifacts.check_artifacts(tmp_path, fp) == []
    (tmp_path / "attribution-rome.txt").write_text("edited by hand")
    assert artifacts.check_artifacts(tmp_path, fp) == ["attribution-rome.txt changed or is missing since `make artifacts`"]
    stale = artifacts.check_artifacts(tmp_path, "tiny|other")
    assert stale[0].startswith(f"built for {fp}, the SAEs are tiny|other")


def test_the_default_docs_folder_is_the_checkouts():
    """`make artifacts` writes where the shipped artifacts are read from (docs/ at the top of the checkout)."""
    assert (artifacts.DOCS / "steering-experiment.md").exists() and (artifacts.DOCS / "DEVELOPING.md").exists()
    assert artifacts.DOCS == Path(__file__).resolve().parents[1] / "docs"
