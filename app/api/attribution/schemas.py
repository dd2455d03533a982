"""Which features drive a next-token logit: request and response."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from app.api.limits import Limit
from app.api.schemas import PromptFields, SystemReadModel, check_text

KIND = "attribution"


class AttributionRequest(PromptFields):
    position: int | None = Field(default=None, ge=0, description="token position whose next-token logit is attributed (default: the last; 404 past the end)")
    target: str | None = Field(default=None, min_length=1, max_length=200,
                               description="candidate next token as text, e.g. ' Rome' (its first token is used); default: the model's top token")
    target_id: int | None = Field(default=None, ge=0, description="candidate next token by id (wins over target)")
    top: Annotated[int, Limit("max_features_shown", "max")] = Field(default=20, ge=1, description="features listed (both SAEs together)")
    n_validate: int = Field(default=10, ge=0, le=20, description="top features checked by clamping them to 0")
    rank: Literal["unusual", "attribution"] = Field(
        default="unusual", description="unusual: by |attribution| with dense features (firing on > 10% of the atlas's "
                                       "tokens) after the rest; attribution: by |attribution| only")

    @field_validator("target", mode="after")
    @classmethod
    def _valid_target(cls, v):
        return check_text(v)


class AttributionPositionModel(BaseModel):
    position: int
    token: str
    activation: float
    attribution: float


class AttributionEntryModel(BaseModel):
    sae: str
    index: int
    label: str | None = None
    attribution: float = Field(description="Σ over positions of activation × (W_dec · dlogit/dresid), logit units")
    positions: list[AttributionPositionModel] = Field(description="where it sits, largest |attribution| first")
    max_activation: float
    ratio: float | None = Field(default=None, description="max_activation / the feature's typical activation when firing (atlas)")
    dense: bool = Field(default=False, description="fires on more than 10% of the atlas's tokens")
    estimate: float | None = Field(default=None, description="linear estimate of the logit change when clamped to 0 (= −attribution)")
    actual: float | None = Field(default=None, description="measured logit change when clamped to 0")
    steer_value: float | None = Field(default=None, description="the strength its 'steer' link opens Generate with, signed like the attribution (app.engine.steering.link_strength)")


class AttributionTermModel(BaseModel):
    name: str = Field(description='"error" (SAE reconstruction error), "bias" (decoder bias) or "sink" (positions not decomposed)')
    sae: str | None = None
    attribution: float


class NextTokenModel(BaseModel):
    id: int
    token: str = Field(description="as shown (app.engine.tokens: a byte token as <0xXX>)")
    prob: float


class AttributionResponse(BaseModel):
    profile: str
    hook_name: str
    text: str
    tokens: list[str] = Field(description="the prompt's tokens up to and including position")
    position: int
    target_id: int
    target: str
    target_note: str | None = None
    logit: float
    prob: float
    top_next: list[tuple[str, float]]
    total: float = Field(description="Σ_t x_t · dlogit/dx_t over every position")
    features: list[AttributionEntryModel]
    terms: list[AttributionTermModel]
    decomposed: list[int]
    correlation: float | None = Field(default=None, description="Pearson(estimate, actual) over the validated features")
    n_validated: int
    next_tokens: list[NextTokenModel] = Field(default_factory=list, description="the model's top next tokens at position, by id: the targets to pick from")
    twin: NextTokenModel | None = Field(default=None, description="a typed target's spaced twin ('Paris' <-> ' Paris') with its probability")
    target_warning: str | None = Field(default=None, description="set when the twin is far more likely than the typed token")
    system: SystemReadModel | None = Field(default=None, description="which system prompt the model read (chat template default included)")
