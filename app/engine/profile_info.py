"""What a loaded profile is: model, hook, both SAEs (architecture, width, d_in, source, dtype, memory), decoder."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SAEInfo:
    name: str  # "coarse" | "fine"
    display: str
    architecture: str  # sae-lens's: standard, gated, jumprelu, topk, ...
    d_sae: int
    d_in: int
    hook_name: str | None
    source: str  # folder, or release:id
    dtype: str
    bytes: int  # parameters and buffers
    neuronpedia: str | None
    quality: dict | None = None  # held-out evaluation set -> {explained_variance, ce_loss_recovered, mean_l0, ...}


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    display: str
    loader: str
    model_name: str
    architecture: str  # transformer-lens cfg.original_architecture
    n_layers: int
    d_model: int
    d_vocab: int
    model_params: int
    model_bytes: int
    model_dtype: str
    hook_name: str
    prepend_bos: bool
    decoder: str  # the generation decoder class used when no foreign hook is attached
    saes: tuple[SAEInfo, ...]
    source_file: str | None


QUALITY_KEYS = ("explained_variance", "ce_loss_recovered", "mean_l0", "dead_fraction", "eval_tokens")


def sae_quality(folder) -> dict | None:
    """Held-out metrics per evaluation set from the metrics.json training wrote beside an SAE (None without one).

    Older files hold one set at the top level: the corpus's held-out slice."""
    import json
    from pathlib import Path

    path = Path(folder) / "metrics.json" if folder is not None else None
    if path is None or not path.exists():
        return None
    m = json.loads(path.read_text())
    sets = m.get("eval_sets") or {"corpus": m}
    return {name: {k: v[k] for k in QUALITY_KEYS if k in v} for name, v in sets.items()}


def _nbytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def describe(profile, model, saes: dict) -> ProfileInfo:
    """ProfileInfo of a loaded model + SAE pair (sizes from the tensors themselves)."""
    from app.engine.generation import fast_decoder_class
    from app.engine.loading import sae_hook_name

    infos = []
    for spec in (profile.coarse, profile.fine):
        sae = saes[spec.name]
        arch = sae.cfg.architecture() if callable(getattr(sae.cfg, "architecture", None)) else type(sae).__name__
        infos.append(SAEInfo(spec.name, spec.display, str(arch), int(sae.cfg.d_sae), int(sae.cfg.d_in), sae_hook_name(sae),
                             spec.source, str(sae.W_dec.dtype).replace("torch.", ""), _nbytes(sae), spec.neuronpedia,
                             sae_quality(spec.path)))
    cls = fast_decoder_class(model)
    cfg = model.cfg
    return ProfileInfo(
        name=profile.name, display=profile.display, loader=profile.loader, model_name=profile.model_name,
        architecture=str(cfg.original_architecture or "custom"), n_layers=int(cfg.n_layers), d_model=int(cfg.d_model),
        d_vocab=int(cfg.d_vocab), model_params=sum(p.numel() for p in model.parameters()), model_bytes=_nbytes(model),
        model_dtype=str(model.W_E.dtype).replace("torch.", ""), hook_name=profile.hook_name,
        prepend_bos=profile.prepend_bos, decoder=cls.__name__ if cls is not None else "TLDecoder",
        saes=tuple(infos), source_file=str(profile.source_file) if profile.source_file else None)
