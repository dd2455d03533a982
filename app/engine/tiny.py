"""The tiny random profile: a scaled-down Llama-style HookedTransformer, a byte tokenizer, random TopK SAEs."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from app.engine import compat

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_tokenizer():
    """A real HF fast tokenizer over bytes (vocab 256 + 3 specials), no hub needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", additional_special_tokens=SPECIALS)
    tok.chat_template = CHAT_TEMPLATE
    # transformer-lens re-loads the tokenizer by name_or_path, so give it a folder to load from.
    folder = Path(tempfile.gettempdir()) / "asn-tiny-tokenizer"
    if not (folder / "tokenizer.json").exists():
        tmp = Path(tempfile.mkdtemp(dir=tempfile.gettempdir()))
        tok.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race
            pass
    return PreTrainedTokenizerFast.from_pretrained(folder)


def tiny_config(options: dict, device: str = "cpu") -> "compat.HookedTransformerConfig":
    d = options.get("d_model", 32)
    return compat.HookedTransformerConfig(
        d_model=d, d_head=8, n_heads=d // 8, n_key_value_heads=max(1, d // 16), d_mlp=2 * d,
        n_layers=options.get("n_layers", 3), n_ctx=512, d_vocab=259, act_fn="silu",
        normalization_type="RMS", final_rms=True, gated_mlp=True, positional_embedding_type="rotary",
        rotary_dim=8, rotary_base=10000, rotary_adjacent_pairs=False, eps=1e-5,
        original_architecture="LlamaForCausalLM", tokenizer_prepends_bos=False, default_prepend_bos=False,
        seed=options.get("seed", 0), device=device, dtype=torch.float32, init_weights=True,
    )


def tiny_model(options: dict, device: str = "cpu"):
    """Random-weight HookedTransformer with the byte tokenizer (weights fixed by the seed)."""
    torch.manual_seed(options.get("seed", 0))
    cfg = tiny_config(options, device)
    model = compat.HookedTransformer(cfg, tokenizer=byte_tokenizer(), move_to_device=True)
    with torch.no_grad():  # TL's init leaves a tiny residual; scale up so features and lens have structure
        model.W_E.mul_(20.0)
    model.eval()
    return model


def tiny_sae(profile, spec, device: str = "cpu"):
    """Random TopK SAE (unit-norm decoder rows, tied encoder) of the width the profile names."""
    d = profile.options.get("d_model", 32)
    width = profile.options[f"{spec.name}_width"]
    g = torch.Generator().manual_seed(profile.options.get("seed", 0) + (1 if spec.name == "fine" else 2))
    W_dec = torch.randn(width, d, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    from app.training.topk_trainer import make_topk_sae

    sae = make_topk_sae(W_dec.T.clone(), torch.zeros(width), W_dec, torch.zeros(d), k=4 if spec.name == "coarse" else 8,
                        hook_name=profile.hook_name)
    return sae.to(device)
