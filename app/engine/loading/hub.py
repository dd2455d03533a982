"""Weights from the Hugging Face hub (pretrained models, SAE releases): fail at once, naming the repo, when
they are not cached and the hub cannot be reached."""
from __future__ import annotations

import time

import torch

from app.engine import compat
from app.engine.availability import repo_cached, sae_cached
from app.engine.loading.base import LoadedModel, ProfileUnavailable
from app.engine.profiles import Profile, SAESpec


def _missing_weights(profile: Profile, exc: BaseException) -> ProfileUnavailable:
    repo = profile.hf_repo or profile.model_name
    how = (f"accept the licence at https://huggingface.co/{repo}, set HF_TOKEN (or `huggingface-cli login`), then "
           if profile.gated else "")
    return ProfileUnavailable(
        f"profile {profile.name}: the weights of {profile.model_name} ({repo}) are not in the Hugging Face cache "
        f"({type(exc).__name__}); {how}run `huggingface-cli download {repo}` on a machine with hub access "
        f"(SAEs: {profile.coarse.source}, {profile.fine.source})."
    )


def _has_hf_token() -> bool:
    import os

    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return True
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:
        return False


def _in_hf_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:
        return False


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connect (offline mode counts as unreachable; behind a proxy
    the probe cannot tell, so the hub client is left to try)."""
    import os
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return False
        if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
            return True
        url = urlparse(constants.ENDPOINT)
        host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except Exception:
        return False


_repo_cached = repo_cached  # one definition of "in the cache" for the loader and the profile page


def _pretrained_model(profile: Profile, device: str) -> LoadedModel:
    t0 = time.perf_counter()
    dtype = getattr(torch, profile.dtype_for(device))
    if profile.gated and not _has_hf_token() and not (profile.hf_repo and _in_hf_cache(profile.hf_repo)):
        raise ProfileUnavailable(
            f"profile {profile.name}: {profile.hf_repo or profile.model_name} is a gated model, not in the Hugging Face "
            f"cache, and no token is set; accept its licence at https://huggingface.co/{profile.hf_repo}, set HF_TOKEN "
            f"(or `huggingface-cli login`), then `huggingface-cli download {profile.hf_repo}`."
        )
    repo = profile.hf_repo or profile.model_name
    # Without the weights and without the hub, stop at once: the hub client would retry for ~50 s first.
    if not (_in_hf_cache(repo) or _repo_cached(repo)) and not _hub_reachable():
        raise _missing_weights(profile, ConnectionError("hub unreachable"))
    try:
        model = compat.HookedTransformer.from_pretrained_no_processing(
            profile.model_name, device=device, dtype=dtype, **profile.from_pretrained_kwargs)
    except Exception as exc:  # hub unreachable / gated repo / not in cache
        raise _missing_weights(profile, exc) from None
    model.eval()
    return LoadedModel(model, model.tokenizer, getattr(model.tokenizer, "chat_template", None), time.perf_counter() - t0, "pretrained")


def load_sae(spec: SAESpec, profile: Profile, device: str = "cpu"):
    """Load one SAE of a profile in the profile's dtype for the device (local sae-lens folder, release/id, or
    random for the tiny profile)."""
    dtype = profile.dtype_for(device)
    if spec.path is not None:
        if not (spec.path / "cfg.json").exists():
            raise ProfileUnavailable(
                f"profile {profile.name}: SAE {spec.name} missing at {spec.path}; "
                + (f"train it with `python -m app.training.saes --profile {profile.name}`"
                   if profile.loader == "gguf" else "save it there with sae-lens's SAE.save_model")
            )
        return compat.load_sae_from_disk(spec.path, device=device, dtype=dtype)
    if spec.release is not None:
        repo = compat.release_repo(spec.release) or spec.release
        path = compat.release_sae_path(spec.release, spec.sae_id)  # its own folder: another layer's is not enough
        if not (sae_cached(repo, path) if path else _repo_cached(repo)) and not _hub_reachable():
            get = f"huggingface-cli download {repo}" + (f" --include '{path}/*'" if path else "")
            raise ProfileUnavailable(
                f"profile {profile.name}: SAE {spec.release}/{spec.sae_id} is not in the Hugging Face cache and the "
                f"hub is unreachable; run `{get}` on a machine with hub access."
            )
        try:
            overrides = (profile.options.get("sae_cfg_overrides") or {}).get(spec.name)
            return compat.load_sae_from_release(spec.release, spec.sae_id, device=device, cfg_overrides=overrides,
                                                dtype=dtype)
        except Exception as exc:
            raise ProfileUnavailable(
                f"profile {profile.name}: SAE {spec.release}/{spec.sae_id} is not in the Hugging Face cache "
                f"({type(exc).__name__}); run `huggingface-cli download {repo}` on a machine with hub access."
            ) from None
    from app.engine.tiny import tiny_sae

    return tiny_sae(profile, spec, device=device)
