"""Concept discovery: the request (two prompt sets and the knobs), the response and the job status."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.api.errors import unprocessable
from app.api.jobs import JobStatus  # noqa: F401  (re-exported: the job status lives with the shared job routes)
from app.api.limits import Limit
from app.api.schemas import FiniteModel, model_of
from app.engine import discovery as disc
from app.engine.profiles import DATA_DIR

PROMPTS_DIR = DATA_DIR / "prompts"
KIND = "discovery"


def shipped_sets(folder: Path = PROMPTS_DIR) -> dict[str, int]:
    """Name -> number of prompts of each shipped set (data/prompts/<name>.txt)."""
    return {p.stem: len(disc.parse_prompt_lines(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("*.txt"))}


def load_set(name: str, folder: Path = PROMPTS_DIR) -> list[str]:
    return disc.parse_prompt_lines((folder / f"{name}.txt").read_text(encoding="utf-8"))


def known_set(v: str | None) -> str | None:
    """A shipped set's name (or None); else a ValueError naming the shipped sets."""
    if v is not None and v not in shipped_sets():
        raise ValueError(f"unknown prompt set {v!r}; shipped: {', '.join(shipped_sets())}")
    return v


def clean_prompts(v: list[str] | None) -> list[str] | None:
    """Pasted prompts stripped, blank ones dropped (None stays None); a ValueError when fewer than 2 remain."""
    if v is None:
        return v
    v = [p.strip() for p in v if p and p.strip()]
    if len(v) < 2:
        raise ValueError("give at least 2 non-empty prompts")
    return v


def resolve_sides(req: BaseModel, sides: tuple[str, ...]) -> list[list[str]]:
    """Each side's `<side>_prompts`, else its shipped `<side>_set`; 422 naming the field when a side has neither."""
    out = []
    for side in sides:
        prompts = getattr(req, f"{side}_prompts")
        if prompts is None:
            name = getattr(req, f"{side}_set")
            if name is None:
                raise unprocessable(["body", f"{side}_prompts"], f"give {side}_prompts or a shipped {side}_set", "missing")
            prompts = load_set(name)
        out.append(prompts)
    return out


KnownSet = Annotated[str | None, AfterValidator(known_set)]
PromptSet = Annotated[list[str] | None, Limit("max_prompt_set_size"), Limit("max_prompt_chars", "each_len"),
                      Limit("max_prompt_set_chars", "total_len"), AfterValidator(clean_prompts)]


class DiscoverRequest(FiniteModel):
    """Two prompt sets (shipped by name, or given one prompt per item) and the analysis knobs."""

    model_config = ConfigDict(extra="forbid")

    concept_set: KnownSet = Field(default="france", description="a shipped set (data/prompts/<name>.txt); ignored when concept_prompts is given")
    contrast_set: KnownSet = Field(default="neutral", description="a shipped set; ignored when contrast_prompts is given")
    concept_prompts: PromptSet = Field(default=None, description="at most max_prompt_set_size prompts of at most max_prompt_chars characters")
    contrast_prompts: PromptSet = Field(default=None, description="at most max_prompt_set_size prompts of at most max_prompt_chars characters")
    aggregate: Literal["max", "mean"] = Field(default="max", description="per-prompt activation: max or mean over tokens (sinks excluded)")
    top_k: Annotated[int, Limit("max_features_shown", "max")] = Field(default=20, ge=1, description="rows per SAE table")
    min_fire_rate: float = Field(default=0.25, ge=0.0, le=1.0, description="a feature must fire on this share of concept prompts to be ranked")
    n_coarse: Annotated[int, Limit("max_discovery_coarse", "max")] = Field(default=5, ge=1, description="top coarse features to map")
    n_fine: Annotated[int, Limit("max_discovery_fine", "max")] = Field(default=30, ge=1, description="top fine features (by selectivity) scored against them")
    cos_threshold: float = Field(default=0.3, ge=-1.0, le=1.0, description="decoder cosine for 'aligned' (blue) and GO/NO-GO")
    corr_threshold: float = Field(default=0.3, ge=-1.0, le=1.0, description="activation correlation for 'correlated'")
    cos_near_zero: float = Field(default=0.1, ge=0.0, le=1.0, description="|cosine| below this counts as 'near 0' (red)")
    hist_coarse: int | None = Field(default=None, ge=0, description="coarse feature whose cosine histogram is drawn (default: the first mapped)")
    rank: Literal["unusual", "selectivity"] = Field(
        default="unusual", description="unusual: by selectivity with dense features (firing on > 10% of the atlas's "
                                       "tokens) after the rest; selectivity: by selectivity only")

    def resolve(self) -> tuple[list[str], list[str]]:
        """(concept prompts, contrast prompts); 422 naming the field when a side has none."""
        concept, contrast = resolve_sides(self, ("concept", "contrast"))
        return concept, contrast


class FeatureRowModel(model_of(disc.FeatureRow)):  # type: ignore[misc]  # the engine's FeatureRow fields, then:
    top_prompt: str | None = None
    label: str = Field(default="", description="the feature's atlas label ('' without an atlas)")
    ratio: float | None = Field(default=None, description="mean_concept / the feature's typical activation when firing (atlas)")
    dense: bool = Field(default=False, description="fires on more than 10% of the atlas's tokens")


class FineInfo(BaseModel):
    selectivity: float
    mean_concept: float
    fire_concept: float
    source: Literal["top", "cosine", "both"]


class ScanModel(BaseModel):
    n_fine: int
    bin_edges: list[float]
    counts: list[list[int]]
    matches: list[list[tuple[int, float]]]
    floor: float
    max_cosine: list[float]


class MappingModel(BaseModel):
    coarse: list[int]
    fine: list[int]
    fine_info: dict[str, FineInfo]
    corr: list[list[float]]
    cos: list[list[float]]
    scan: ScanModel


class GoNoGo(BaseModel):
    coarse: int
    n_above: int
    go: bool
    best: list[tuple[int, float]]


class DiscoveryResponse(BaseModel):
    profile: str
    hook_name: str
    fingerprint: str
    set_hash: str
    n_concept: int
    n_contrast: int
    n_positions: int
    n_tokens_used: int
    seconds: float
    tokens_per_s: float | None
    aggregate: str
    widths: dict[str, int]
    tables: dict[str, list[FeatureRowModel]]
    mapping: MappingModel | None
    go_no_go: list[GoNoGo]
    go: bool
    pair_independence: dict | None = Field(default=None, description="same-index decoder cosines of the coarse/fine pair; "
                                           "a warning when the pair was initialised together (see /health)")
