"""The one place that imports transformer-lens / sae-lens symbols that move between versions."""
from __future__ import annotations

from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig  # noqa: F401
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: F401
from transformer_lens.pretrained.weight_conversions import convert_llama_weights  # noqa: F401


def load_sae_from_disk(path, device: str = "cpu", dtype: str | None = None):
    """Load an SAE saved in sae-lens's disk format (cfg.json + sae_weights.safetensors)."""
    return SAE.load_from_disk(str(path), device=device, dtype=dtype)


def load_sae_from_release(release: str, sae_id: str, device: str = "cpu", dtype: str | None = None,
                          cfg_overrides: dict | None = None):
    """Load a pretrained SAE by sae-lens release/id (needs the files in the local HF cache).

    cfg_overrides go on top of the release's config (through the release's own converter).
    """
    kw = {"dtype": dtype} if dtype is not None else {}
    if cfg_overrides:
        kw["converter"] = release_converter(release, cfg_overrides)
    sae = SAE.from_pretrained(release, sae_id, device=device, **kw)
    # sae-lens < 6 returned (sae, cfg, sparsity); 6.x returns the SAE.
    return sae[0] if isinstance(sae, tuple) else sae


def speed_up_cpu_matmuls(model) -> int:
    """Swap GatedMLP/Unembed forwards for plain matmuls (TL 3.x re-materialises W.T per call).

    Same maths and the same hook points; returns how many modules were patched.
    """
    import types

    import torch
    from transformer_lens.components import GatedMLP, Unembed

    def gated_forward(self, x):
        pre_act = self.hook_pre(x @ self.W_gate)
        pre_linear = self.hook_pre_linear(x @ self.W_in)
        post_act = self.hook_post(self.act_fn(pre_act) * pre_linear + self.b_in)
        return torch.addmm(self.b_out, post_act.reshape(-1, post_act.shape[-1]), self.W_out).reshape(
            *post_act.shape[:-1], self.W_out.shape[-1]
        )

    def unembed_forward(self, residual):
        residual = self.hook_in(residual)
        return self.hook_out(residual @ self.W_U + self.b_U)

    n = 0
    for mod in model.modules():
        if isinstance(mod, GatedMLP) and not (mod.cfg.is_layer_norm_activation()):
            mod.forward = types.MethodType(gated_forward, mod)
            n += 1
        elif isinstance(mod, Unembed):
            mod.forward = types.MethodType(unembed_forward, mod)
            n += 1
    return n


def kv_cache(model, batch_size: int = 1):
    """An empty transformer-lens key-value cache for `model` (the class moved between TL versions)."""
    try:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache as Cache
    except ImportError:  # transformer-lens 2.x
        from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache as Cache
    return Cache.init_cache(model.cfg, model.cfg.device, batch_size)


def tl_official_config(model_name: str) -> dict:
    """transformer-lens's own config dict for an official model (name-based for Gemma 2: no hub access)."""
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    return convert_hf_model_config(model_name)


def convert_gemma_weights(hf_model, cfg):
    """transformer-lens's Gemma / Gemma 2 HF -> HookedTransformer state-dict converter."""
    from transformer_lens.pretrained.weight_conversions import convert_gemma_weights as conv

    return conv(hf_model, cfg)


def release_converter(release: str, cfg_overrides: dict | None = None):
    """The sae-lens converter registered for a release, with extra config overrides on top of the release's own
    (scaled-down test copies of a release: same files layout, same converter, smaller d_in / d_sae)."""
    from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_LOADERS, get_conversion_loader_name

    base = NAMED_PRETRAINED_SAE_LOADERS[get_conversion_loader_name(release)]
    if not cfg_overrides:
        return base

    def converter(repo_id, folder_name, device="cpu", force_download=False, cfg_overrides=None, **kw):
        merged = {**(cfg_overrides or {}), **extra}
        return base(repo_id=repo_id, folder_name=folder_name, device=device, force_download=force_download,
                    cfg_overrides=merged, **kw)

    extra = dict(cfg_overrides)
    return converter


def apply_llama3_rope_scaling(cfg_dict: dict, hf_config) -> None:
    """transformer-lens's Llama 3.x rope-scaling fields from an HF config (in place)."""
    from transformer_lens.loading_from_pretrained import _apply_llama3_rope_scaling

    _apply_llama3_rope_scaling(cfg_dict, hf_config)


def convert_hf_weights(hf_model, cfg) -> dict:
    """transformer-lens's HF -> HookedTransformer state-dict converter for cfg.original_architecture."""
    from transformer_lens.pretrained import weight_conversions as W

    conv = {"GPT2LMHeadModel": W.convert_gpt2_weights, "LlamaForCausalLM": W.convert_llama_weights,
            "MistralForCausalLM": W.convert_mistral_weights, "Qwen2ForCausalLM": W.convert_qwen2_weights,
            "Gemma2ForCausalLM": W.convert_gemma_weights, "GemmaForCausalLM": W.convert_gemma_weights}
    return conv[cfg.original_architecture](hf_model, cfg)


def pretrained_sae_entry(release: str) -> dict | None:
    """sae-lens's pretrained_saes.yaml entry for a release (repo_id, model, saes [{id, path, neuronpedia}])."""
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:
        return None
    lookup = get_pretrained_saes_directory().get(release)
    if lookup is None:
        return None
    return {"repo_id": lookup.repo_id, "model": lookup.model, "saes": dict(lookup.saes_map),
            "neuronpedia": dict(getattr(lookup, "neuronpedia_id", None) or {})}


def release_repo(release: str) -> str | None:
    entry = pretrained_sae_entry(release)
    return entry["repo_id"] if entry else None


def release_sae_path(release: str, sae_id: str) -> str | None:
    """The folder of release/sae_id inside the release's repo, as sae-lens records it (None when it does not list it)."""
    entry = pretrained_sae_entry(release)
    return entry["saes"].get(sae_id) if entry else None


def neuronpedia_id(release: str, sae_id: str) -> str | None:
    """The Neuronpedia id sae-lens records for release/sae_id (None when it has none)."""
    entry = pretrained_sae_entry(release)
    return (entry or {}).get("neuronpedia", {}).get(sae_id) if entry else None


def tl_official_name(model_name: str) -> str:
    """transformer-lens's official HF name for a model name or alias (ValueError when TL does not know it)."""
    from transformer_lens.loading_from_pretrained import get_official_model_name

    return get_official_model_name(model_name)


def block_attention(block, resid):
    """One block's attention alone on its input residual [batch, pos, d] (ln1, then attention: no MLP), its hook
    points (hook_pattern, hook_z, ...) firing as in a full forward. None where the block feeds its attention some
    other way (per-head or split inputs, post-norm blocks, shortformer or relative position terms): run the model."""
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # an older layout: none of the architectures it knows is post-norm
        POST_NORM_ARCHITECTURES = ()
    cfg = block.cfg
    if (cfg.use_attn_in or cfg.use_split_qkv_input or cfg.original_architecture in POST_NORM_ARCHITECTURES
            or cfg.positional_embedding_type in ("shortformer", "relative_positional_bias")):
        return None
    x = block.ln1(resid)
    return block.attn(query_input=x, key_input=x, value_input=x)


def run_block(block, resid, past_kv=None):
    """One transformer-lens block on resid [batch, pos, d], its attention also reading `past_kv` (an entry with
    past_keys / past_values and append(k, v), e.g. patching_runs.PrefixKV) as the positions before."""
    return block(resid, past_kv_cache_entry=past_kv)
