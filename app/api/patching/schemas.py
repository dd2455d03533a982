"""Compare two prompts, activation patching, attention heads: requests and responses."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.limits import Limit
from app.api.schemas import PromptFields, SafeText

COMPARE_KIND, PATCHING_KIND, HEADS_KIND = "compare", "patching", "heads"
Site = Literal["resid_pre", "attn_out", "mlp_out"]
Word = Annotated[SafeText, Field(min_length=1, max_length=100)]


class _PairFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: Annotated[SafeText | None, Limit("max_system_prompt_chars")] = Field(
        default=None, description="at most max_system_prompt_chars characters; used for both prompts")
    chat: bool | None = Field(default=None, description="use the chat template (default: when a system prompt is given)")


class CompareRequest(_PairFields):
    prompt_a: Annotated[SafeText, Limit("max_prompt_chars")] = Field(min_length=1)
    prompt_b: Annotated[SafeText, Limit("max_prompt_chars")] = Field(min_length=1)
    tokens: list[Word] | None = Field(default=None, min_length=2, max_length=2,
                                      description="[answer, wrong]: each one token (e.g. [' Paris', ' Rome'])")
    position: int | None = Field(default=None, ge=0, description="aligned position compared (same-length prompts; default the last)")
    top: Annotated[int, Limit("max_features_shown", "max")] = Field(default=10, ge=1)


class FeatureDiffModel(BaseModel):
    sae: str
    index: int
    label: str | None = None
    a: float
    b: float
    diff: float = Field(description="a - b")


class CompareResponse(BaseModel):
    profile: str
    tokens_a: list[str]
    tokens_b: list[str]
    aligned: bool = Field(description="same length: positions compared one to one")
    position_a: int
    position_b: int
    at_position: list[FeatureDiffModel] = Field(description="features differing most at the compared position")
    summed: list[FeatureDiffModel] = Field(description="Σ over each prompt's positions (position 0 and sinks left out)")
    next_a: list[tuple[str, float]]
    next_b: list[tuple[str, float]]
    answer: str | None = None
    wrong: str | None = None
    logit_diff_a: float | None = None
    logit_diff_b: float | None = None


class PatchingRequest(_PairFields):
    clean: Annotated[SafeText, Limit("max_prompt_chars")] = Field(min_length=1)
    corrupt: Annotated[SafeText, Limit("max_prompt_chars")] = Field(min_length=1,
                                                                    description="must tokenise to the clean prompt's length")
    answer: Word = Field(description="the clean run's answer, one token with its leading space (' Paris')")
    wrong: Word = Field(description="the corrupt run's answer, one token (' Rome')")
    site: Site = "resid_pre"
    features: bool = Field(default=True, description="also patch the SAE features at the SAE's hook, one at a time")
    attribution: bool = Field(default=True, description="also the attribution-patching grid (one backward) and its correlation")


class FeaturePatchModel(BaseModel):
    sae: str
    index: int
    label: str | None = None
    effect: float | None = Field(description="normalised LD with this feature alone patched to its clean value")
    delta: list[float] = Field(description="[position] clean minus corrupt activation")


class PatchingResponse(BaseModel):
    profile: str
    site: Site
    layers: list[int]
    tokens: list[str] = Field(description="the clean prompt's tokens")
    corrupt_tokens: list[str]
    grid: list[list[float | None]] = Field(description="[layer][position] normalised LD: 0 as corrupt, 1 as clean")
    ld_clean: float
    ld_corrupt: float
    answer: str
    wrong: str
    answer_id: int
    wrong_id: int
    runs: int
    batches: int
    attribution_grid: list[list[float | None]] | None = None
    correlation: float | None = Field(default=None, description="Pearson r of attribution vs exact patching")
    sae_hook: str
    sae_layer: int | None = Field(default=None, description="the grid row that is the SAE's hook, if any")
    features: list[FeaturePatchModel] = []


class AttentionRequest(PromptFields):
    target: Word | None = Field(default=None, description="next token whose logit the head DLA is for (its first token); default the top one")
    target_id: int | None = Field(default=None, ge=0, description="the same by token id (wins over target)")


class AttentionResponse(BaseModel):
    profile: str
    tokens: list[str]
    n_layers: int
    n_heads: int
    patterns: list[list[list[list[float]]]] = Field(description="[layer][head][query][key], 4 decimals")
    dla: list[list[float]] = Field(description="[layer][head] direct logit attribution to target at the last position")
    target: str
    target_id: int
    top_next: list[tuple[str, float]]
    top_next_ids: list[int] = Field(default=[], description="the ids of top_next, in the same order")


class HeadsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(default=20, ge=4, le=64, description="random tokens, repeated once")
    n_seqs: int = Field(default=4, ge=1, le=8)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    top: int = Field(default=10, ge=1, le=50, description="heads listed per score")


class HeadScoreModel(BaseModel):
    layer: int
    head: int
    score: float


class HeadExampleModel(BaseModel):
    score: str
    layer: int
    head: int
    pattern: list[list[float]]


class HeadsResponse(BaseModel):
    profile: str
    n_layers: int
    n_heads: int
    tokens: list[str] = Field(description="the first random sequence (what the examples show)")
    scores: dict[str, list[list[float]]] = Field(description="score -> [layer][head]")
    top: dict[str, list[HeadScoreModel]]
    examples: list[HeadExampleModel]
