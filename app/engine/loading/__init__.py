"""Load a profile's model and SAE pair through one code path (GGUF, pretrained, or random)."""
from __future__ import annotations

from app.engine.loading.base import MODELS_DIR, LoadedModel, ProfileUnavailable
from app.engine.loading.hub import _gguf_model, _pretrained_model, fetch_wheel_gguf, llama_tl_config, load_hf_gguf
from app.engine.loading.local import _local_model, _random_model, hooked_from_hf, tl_config_dict_from_hf
from app.engine.loading.saes import load_sae, sae_hook_name, validate_pair, with_neuronpedia_ids
from app.engine.profiles import Profile

__all__ = ["MODELS_DIR", "LoadedModel", "ProfileUnavailable", "fetch_wheel_gguf", "llama_tl_config", "load_hf_gguf",
           "hooked_from_hf", "tl_config_dict_from_hf", "load_sae", "sae_hook_name", "validate_pair",
           "with_neuronpedia_ids", "load_model"]


def load_model(profile: Profile, device: str = "cpu", **kw) -> LoadedModel:
    """Load a profile's HookedTransformer by its loader kind (kw: loader options, e.g. models_dir for gguf)."""
    loaders = {"gguf": _gguf_model, "pretrained": _pretrained_model, "random": _random_model, "hf_dir": _local_model,
               "gguf_file": _local_model}
    return loaders[profile.loader](profile, device, **kw)
