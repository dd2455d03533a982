"""What of a profile is on this machine (model files, SAE folders, Hugging Face cache), read cheaply: no torch,
no sae-lens import."""
from __future__ import annotations

import functools
import re
from pathlib import Path

from app.engine.profiles import DATA_DIR, Profile


def is_cached(profile: Profile, data_dir: Path = DATA_DIR) -> bool:
    """True when a GGUF profile's converted weights and local SAE folders are on disk (no torch import)."""
    if profile.loader != "gguf":
        return False
    model_dir = data_dir / "models" / profile.name
    local = [s.path for s in (profile.coarse, profile.fine)]
    return (model_dir / "hooked_fp32.pt").exists() and all(p is not None and (p / "cfg.json").exists() for p in local)


def _hf_cache_dir() -> Path:
    """The hub cache as huggingface_hub resolves it (HF_HUB_CACHE, HF_HOME, the default), so the profile page and
    the loader agree."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_cached(repo: str) -> bool:
    """Whether a hub repo has a downloaded snapshot in the local cache (a leftover folder without one does not count)."""
    snaps = _hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots"
    return snaps.is_dir() and any(snaps.iterdir())


@functools.lru_cache(maxsize=256)  # the installed file does not change under a running server; it is 1.5 MB
def _release_entry(release: str, sae_id: str | None = None) -> tuple[str | None, str | None]:
    """(repo_id, the SAE's path in that repo) of a sae-lens release, read line by line from the installed sae-lens's
    pretrained_saes.yaml (no sae-lens import, no YAML parse); repo None for an unknown release, path None when
    sae_id is not among its SAEs."""
    import importlib.util

    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    yaml_path = Path(list(spec.submodule_search_locations)[0]) / "pretrained_saes.yaml"
    pat = re.compile(rf"^{re.escape(release)}:\s*$")
    in_block, repo, current, path = False, None, None, None
    for line in yaml_path.read_text().splitlines():
        if pat.match(line):
            in_block = True
        elif not in_block:
            continue
        elif line and not line.startswith(" "):  # the next release
            break
        elif line.startswith("  repo_id:"):
            repo = line.split(":", 1)[1].strip()
        elif line.startswith("  - id:"):
            current = line.split(":", 1)[1].strip()
        elif line.startswith("    path:") and sae_id is not None and current == sae_id:
            path = line.split(":", 1)[1].strip()
    return repo, path


def sae_cached(repo: str, path: str) -> bool:
    """Whether a downloaded snapshot of the repo holds this SAE's folder (another layer's does not count)."""
    snaps = _hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots"
    return snaps.is_dir() and any((snap / path).exists() for snap in snaps.iterdir())


def missing_parts(profile: Profile, data_dir: Path = DATA_DIR) -> list[str]:
    """What this machine lacks to serve the profile (empty when everything is on disk), cheaply: no torch."""
    out = []
    if profile.loader == "gguf":
        gguf = data_dir / "models" / profile.name
        if not (gguf / "hooked_fp32.pt").exists() and not list(gguf.glob("*.gguf")):
            out.append(f"model: `python -m app fetch --profile {profile.name}`")
    elif profile.loader in ("hf_dir", "gguf_file"):
        if not Path(profile.model_name).exists():
            out.append(f"model: {profile.model_name}")
    elif profile.loader == "pretrained":
        repo = profile.hf_repo or profile.model_name
        if not repo_cached(repo):
            out.append(f"model: {repo} (Hugging Face{', gated' if profile.gated else ''})")
    for spec in (profile.coarse, profile.fine):
        if spec.path is not None and not (spec.path / "cfg.json").exists():
            out.append(f"{spec.name} SAE: {spec.path}")
        elif spec.release is not None:
            sae_repo, sae_path = _release_entry(spec.release, spec.sae_id)
            if sae_repo is None:
                out.append(f"{spec.name} SAE: release {spec.release} is not in this sae-lens")
            elif sae_path is None:
                out.append(f"{spec.name} SAE: release {spec.release} has no id {spec.sae_id} in this sae-lens")
            elif not sae_cached(sae_repo, sae_path):
                out.append(f"{spec.name} SAE: {sae_repo} ({spec.sae_id})")
    return out
