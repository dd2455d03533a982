"""The SAE pair: loading each SAE, its hook point, checking the pair against the model, Neuronpedia ids."""
from __future__ import annotations

from app.engine import compat
from app.engine.loading.base import ProfileUnavailable
from app.engine.profiles import Profile, SAESpec


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
        try:
            overrides = (profile.options.get("sae_cfg_overrides") or {}).get(spec.name)
            return compat.load_sae_from_release(spec.release, spec.sae_id, device=device, cfg_overrides=overrides,
                                                dtype=dtype)
        except Exception as exc:
            repo = compat.release_repo(spec.release) or spec.release
            raise ProfileUnavailable(
                f"profile {profile.name}: SAE {spec.release}/{spec.sae_id} is not in the Hugging Face cache "
                f"({type(exc).__name__}); run `huggingface-cli download {repo}` on a machine with hub access."
            ) from None
    from app.engine.tiny import tiny_sae

    return tiny_sae(profile, spec, device=device)


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
