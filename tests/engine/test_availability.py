"""app/engine/availability.py: what of a hub profile is cached, per SAE (its folder in the repo's snapshot), read
from sae-lens's pretrained_saes.yaml by line (no sae-lens import) and checked here against sae-lens's own directory
of releases (what the loader asks, through app/engine/compat.py)."""
from __future__ import annotations

import pytest

from app.engine.availability import _release_entry, missing_parts, sae_cached
from app.engine.profiles import get_profile

RELEASE = "gpt2-small-res-jb-feature-splitting"
REPO = "jbloom/GPT2-Small-Feature-Splitting-Experiment-Layer-8"


@pytest.mark.parametrize("release, sae_id", [
    (RELEASE, "blocks.8.hook_resid_pre_768"), (RELEASE, "blocks.8.hook_resid_pre_24576"),
    ("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"),
    ("gemma-scope-2b-pt-res-canonical", "layer_12/width_262k/canonical"),
])
def test_entry_matches_sae_lens_directory(release, sae_id):
    from app.engine import compat

    want = compat.pretrained_sae_entry(release)
    assert want is not None and want["saes"][sae_id]
    assert _release_entry(release, sae_id) == (want["repo_id"], want["saes"][sae_id])
    assert compat.release_sae_path(release, sae_id) == want["saes"][sae_id]


def test_unknown_release_and_id():
    from app.engine import compat

    assert _release_entry("no-such-release", "x") == (None, None) and compat.pretrained_sae_entry("no-such-release") is None
    assert _release_entry(RELEASE, "blocks.8.hook_resid_pre_7") == (REPO, None)
    assert compat.release_sae_path(RELEASE, "blocks.8.hook_resid_pre_7") is None
    assert _release_entry(RELEASE) == (REPO, None)


def test_one_cached_layer_does_not_make_another_cached(tmp_path, monkeypatch):
    """The gpt2-small profile's two SAEs live in one repo: a snapshot holding only the coarse one's folder leaves the
    fine one missing (the hub client would otherwise be sent to fetch it and wait out its retries)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    prof = get_profile("gpt2-small")
    snap = tmp_path / f"models--{REPO.replace('/', '--')}" / "snapshots" / ("0" * 40)
    (snap / "blocks.8.hook_resid_pre_768").mkdir(parents=True)
    sae_lines = [m for m in missing_parts(prof) if "SAE" in m]
    assert sae_lines == [f"fine SAE: {REPO} (blocks.8.hook_resid_pre_24576)"]
    assert sae_cached(REPO, "blocks.8.hook_resid_pre_768") and not sae_cached(REPO, "blocks.8.hook_resid_pre_24576")
    (snap / "blocks.8.hook_resid_pre_24576").mkdir()
    assert [m for m in missing_parts(prof) if "SAE" in m] == []


def test_an_id_the_release_lacks_is_named(tmp_path, monkeypatch):
    from dataclasses import replace

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    prof = get_profile("gpt2-small")
    prof = replace(prof, fine=replace(prof.fine, sae_id="blocks.8.hook_resid_pre_7"))
    assert f"fine SAE: release {RELEASE} has no id blocks.8.hook_resid_pre_7 in this sae-lens" in missing_parts(prof)
