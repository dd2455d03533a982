"""Generation, steering, dose-response, temperature and system-prompt views: requests and responses.

Fields bounded by a limit carry `Limit(...)` (checked against the app's settings by `enforce_limits`)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.limits import Limit
from app.api.schemas import FiniteModel, PromptFields, SystemReadModel
from app.engine import sampling as S

SaeName = Literal["coarse", "fine"]


# ---------------------------------------------------------------- requests
class SteerFeatureModel(FiniteModel):
    model_config = ConfigDict(extra="forbid")

    sae: SaeName = "coarse"
    index: int = Field(ge=0, description="feature index in that SAE (0 .. width-1)")
    mode: Literal["add", "clamp"] = Field(default="add", description="add: x += c*W_dec[f]; clamp: set the SAE activation a_f to v, keeping the SAE error")
    value: Annotated[float, Limit("max_steering_strength", "abs")] = Field(
        default=0.0, description="c (add) or v (clamp), in units of the feature's activation; |value| <= max_steering_strength")


class SamplingFields(FiniteModel):
    max_new_tokens: Annotated[int, Limit("max_new_tokens", "max")] = Field(default=32, ge=1, description="1 .. max_new_tokens")
    temperature: Annotated[float, Limit("max_temperature", "max")] = Field(default=0.0, ge=0.0, description="0 = greedy")
    top_k: Annotated[int, Limit("max_top_k", "max")] = Field(default=0, ge=0, description="0 = off")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="1 = off")
    seed: Annotated[int, Limit("max_seed", "max")] = Field(default=0, ge=0)

    def sampling(self) -> S.SamplingParams:
        return S.SamplingParams(self.temperature, self.top_k, self.top_p, self.seed)


class SteeringFields(FiniteModel):
    steering: Annotated[list[SteerFeatureModel], Limit("max_steering_features")] = Field(
        default_factory=list, description="at most max_steering_features features")
    generated_only: bool = Field(default=False, description="steer only the positions that predict generated tokens")
    skip_sinks: bool = Field(default=True, description="leave position 0 (attention sink) and massive-norm positions unsteered")


class GenerateRequest(PromptFields, SamplingFields, SteeringFields):
    pass


class SteerRequest(GenerateRequest):
    top_n: Annotated[int, Limit("max_features_shown", "max")] = Field(default=10, ge=1)


class DoseRequest(PromptFields, SamplingFields):
    feature: SteerFeatureModel
    strengths: Annotated[list[float], Limit("max_dose_points"), Limit("max_steering_strength", "each_abs")] = Field(
        min_length=2, description="2 .. max_dose_points values, each |value| <= max_steering_strength")
    generated_only: bool = False
    skip_sinks: bool = True
    promoted_top: int = Field(default=5, ge=1, le=20)
    moved_top: int = Field(default=5, ge=1, le=20, description="tokens whose probability moved most across the strengths")

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, v):
        for s in v:
            if s != s or s in (float("inf"), float("-inf")):
                raise ValueError("each strength must be a finite number")
        return v


class TemperatureRequest(PromptFields, SteeringFields):
    temperatures: Annotated[list[float], Limit("max_temperatures"), Limit("max_temperature", "each_max")] = Field(
        default_factory=lambda: [0.2, 0.7, 1.0, 1.5], min_length=1,
        description="1 .. max_temperatures temperatures in (0, max_temperature]")
    top_k: Annotated[int, Limit("max_top_k", "max")] = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_n: Annotated[int, Limit("max_features_shown", "max")] = Field(default=12, ge=1, description="tokens shown")

    @field_validator("temperatures")
    @classmethod
    def _temps(cls, v):
        for t in v:
            if not (0.0 < t < float("inf")):
                raise ValueError("each temperature must be a finite number > 0 (at most max_temperature)")
        return v


class SystemShiftRequest(SteeringFields):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Limit("max_prompt_chars")] = Field(min_length=1)
    system_a: Annotated[str | None, Limit("max_system_prompt_chars")] = Field(default=None, description="None/empty: no system prompt")
    system_b: Annotated[str | None, Limit("max_system_prompt_chars")] = Field(default=None)
    chat: bool = Field(default=True, description="use the chat template for both")
    no_default_system: bool = Field(default=False, description="an empty A or B is a true none: the template's default system prompt is left out")
    top_n: Annotated[int, Limit("max_features_shown", "max")] = Field(default=10, ge=1)


class FeatureInfoRequest(PromptFields):
    sae: SaeName = "coarse"
    index: int = Field(ge=0)
    skip_sinks: bool = True


# ---------------------------------------------------------------- responses
class TokenOut(BaseModel):
    id: int
    text: str
    prob: float


class GenerationOut(BaseModel):
    tokens: list[TokenOut]
    text: str
    finish_reason: str
    n_new: int
    seconds: float
    tokens_per_s: float | None
    decoder: str


class GenerateResponse(BaseModel):
    profile: str
    hook_name: str
    prompt_text: str
    prompt_tokens: list[str]
    generation: GenerationOut
    system: SystemReadModel | None = Field(default=None, description="which system prompt the model read (chat template default included)")


class ShiftRowOut(BaseModel):
    token_id: int
    token: str
    p_a: float
    p_b: float
    delta: float
    rank_a: int
    rank_b: int


class SteerResponse(BaseModel):
    profile: str
    hook_name: str
    prompt_text: str
    prompt_tokens: list[str]
    unsteered: GenerationOut
    steered: GenerationOut
    diverged: list[bool]  # per generated position: the two tokens differ (or one run has ended)
    first_divergence: int | None
    shift: list[ShiftRowOut]  # next-token distribution at the end of the prompt, unsteered (a) vs steered (b)
    system: SystemReadModel | None = Field(default=None, description="which system prompt the model read (chat template default included)")


class PromotedOut(BaseModel):
    token_id: int
    token: str
    logit_weight: float  # (W_dec[f] @ W_U)[token]
    probs: list[float]  # next-token probability at the end of the prompt, per strength


class MovedOut(BaseModel):
    token_id: int
    token: str
    spread: float  # max - min of its probability over the strengths
    probs: list[float]  # next-token probability at the end of the prompt, per strength


class DoseResponse(BaseModel):
    profile: str
    hook_name: str
    prompt_text: str
    strengths: list[float]
    completions: list[GenerationOut]
    promoted: list[PromotedOut]
    moved: list[MovedOut] = Field(default_factory=list)  # what the chart plots (empty in snapshots saved before it)
    top_next: list[TokenOut]  # the most probable next token at each strength
    system: SystemReadModel | None = Field(default=None, description="which system prompt the model read (chat template default included)")


class TokenRef(BaseModel):
    id: int
    token: str


class TemperatureViewOut(BaseModel):
    temperature: float
    entropy_bits: float
    probs: list[float]
    kept: list[bool]
    renormalised: list[float]
    n_kept: int
    entropy_kept_bits: float


class TemperatureResponse(BaseModel):
    profile: str
    prompt_text: str
    tokens: list[TokenRef]  # the top tokens at temperature 1
    views: list[TemperatureViewOut]
    top_k: int
    top_p: float
    steered: bool
    system: SystemReadModel | None = Field(default=None, description="which system prompt the model read (chat template default included)")


class SystemShiftResponse(BaseModel):
    profile: str
    text_a: str
    text_b: str
    rows: list[ShiftRowOut]
    entropy_a_bits: float
    entropy_b_bits: float
    steered: bool
    system_a_read: SystemReadModel | None = Field(default=None, description="which system prompt the model read with A")
    system_b_read: SystemReadModel | None = Field(default=None, description="which system prompt the model read with B")


class FeatureInfoResponse(BaseModel):
    sae: str
    index: int
    width: int
    max_on_prompt: float
    typical_max: float
    source: str
    slider_min: float
    slider_max: float
    promoted: list[TokenRef]


class CancelResponse(BaseModel):
    run_id: str
    cancelled: bool
