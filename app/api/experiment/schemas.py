"""The steering experiment: request (anchor, children, prompt sets, sweep), response (table, verdicts, generations)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.api.discover.schemas import KnownSet, PromptSet, clean_prompts, resolve_sides
from app.api.jobs import JobStatus
from app.api.limits import Limit
from app.api.schemas import FiniteModel

KIND = "experiment"


class ExperimentRequest(FiniteModel):
    """Coarse anchor + fine children, the prompt sets (shipped by name or pasted) and the sweep."""

    model_config = ConfigDict(extra="forbid")

    anchor: int = Field(ge=0, description="coarse feature index (the anchor)")
    children: Annotated[list[int] | None, Limit("max_experiment_children")] = Field(
        default=None, description="fine feature indices; default: the anchor's blue matches (decoder cosine >= 0.3, selective)")
    concept_set: KnownSet = Field(default="france", description="shipped set the probe learns as the concept")
    contrast_set: KnownSet = Field(default="neutral", description="shipped set the probe learns as the contrast")
    concept_prompts: PromptSet = Field(default=None, description="pasted concept prompts (instead of concept_set)")
    contrast_prompts: PromptSet = Field(default=None, description="pasted contrast prompts (instead of contrast_set)")
    eval_set: KnownSet = Field(default="eval_neutral", description="shipped evaluation prompts (not used in discovery)")
    eval_prompts: Annotated[list[str] | None, Limit("max_experiment_prompts"), Limit("max_prompt_chars", "each_len"),
                            AfterValidator(clean_prompts)] = Field(
        default=None, description="pasted evaluation prompts (instead of eval_set)")
    n_prompts: Annotated[int, Limit("max_experiment_prompts", "max")] = Field(default=16, ge=1, description="the first N evaluation prompts")
    strengths: Annotated[list[float], Limit("max_experiment_strengths"), Limit("max_steering_strength", "each_abs")] = Field(
        default=[2.0, 4.0, 8.0], min_length=1, description="multiples of each feature's typical activation")
    modes: list[Literal["add", "clamp"]] = Field(default=["add"], min_length=1, max_length=2)
    matched_norm: bool = Field(default=True, description="also compare every arm at the coarse arm's steering-vector norm")
    max_new_tokens: Annotated[int, Limit("max_new_tokens", "max")] = Field(default=32, ge=1)
    temperature: Annotated[float, Limit("max_temperature", "max")] = Field(default=0.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n_seeds: Annotated[int, Limit("max_experiment_seeds", "max")] = Field(default=1, ge=1, description="sampled generations per prompt (temperature > 0)")
    seed: Annotated[int, Limit("max_seed", "max")] = Field(default=0, ge=0)
    words: list[Annotated[str, Field(max_length=64)]] = Field(default=[], max_length=50, description="optional concept words")
    probe_layer: int | None = Field(default=None, ge=0, description="layer of the probe's residual (default: a later layer than the SAE's)")
    chat: bool = Field(default=False, description="wrap evaluation prompts in the chat template")
    measure: Literal["zeroshot", "probe"] = Field(
        default="zeroshot", description="the concept score: zero-shot, how much likelier the model itself finds the generated "
                                        "tokens after concept examples than after contrast texts or texts pushed along random "
                                        "directions (nats per token, clipped to [0, 4]; default), or the layer probe (reads pushing)")

    def resolve(self) -> tuple[list[str], list[str], list[str]]:
        """(concept, contrast, evaluation prompts); 422 naming the field when a side has none."""
        concept, contrast, evalp = resolve_sides(self, ("concept", "contrast", "eval"))
        return concept, contrast, evalp[: self.n_prompts]


class TypicalModel(BaseModel):
    sae: str
    index: int
    value: float
    source: str


class ProbeModel(BaseModel):
    layer: int
    hook: str
    holdout_accuracy: float | None
    n_train: int
    c: float


Interval = list[float | None]


class ControlPoint(BaseModel):
    condition: str
    scale: str
    strength: float
    concept: float | None
    ci: Interval
    contains: bool
    raises: bool
    max_rise: float | None


class ContrastPrefaceModel(BaseModel):
    name: str
    examples: list[str]


class PushPointModel(BaseModel):
    vector_norm: float
    rise: float | None
    ci: Interval
    contains: bool
    raises: bool


class PushCheckModel(BaseModel):
    """Contrast prompts generated unsteered and pushed along random directions (not the run's random arm) at each of
    its norms: the measure's pushed - unsteered difference, paired per prompt."""

    n_prompts: int
    per_norm: list[PushPointModel]
    raises: bool
    contains_all: bool
    preface_prompts: list[str]
    check_prompts: list[str]


class MeasureModel(BaseModel):
    name: str
    description: str
    auc: float | None
    auc_probe: float | None = None
    n_validation: list[int]
    validation_source: str
    concept_examples: list[str]
    contrast_examples: list[str]
    contrasts: list[ContrastPrefaceModel] = []
    pushes: PushCheckModel | None = None
    random_raises: bool | None = None


class TableRow(BaseModel):
    condition: str
    arm: str
    mode: str
    scale: str
    strength: float
    vector_norm: float | None
    concept: float | None
    concept_ci: Interval
    concept_hw: float | None = None
    zeroshot: float | None = None
    zeroshot_ci: Interval | None = None
    zeroshot_hw: float | None = None
    probe: float | None = None
    probe_ci: Interval | None = None
    probe_hw: float | None = None
    sae: float | None
    sae_ci: Interval
    sae_hw: float | None = None
    logprob: float | None
    logprob_ci: Interval
    logprob_hw: float | None = None
    distinct2: float | None
    distinct2_ci: Interval
    distinct2_hw: float | None = None
    words: float | None = None
    words_ci: Interval | None = None
    words_hw: float | None = None
    fluency_ratio: float | None
    fluency_ratio_ci: Interval


class VerdictModel(BaseModel):
    mode: str
    scale: str
    label: str
    target: float | None
    fluency: dict[str, float | None]
    best: str | None
    runner_up: str | None
    diff: float | None
    diff_ci: Interval | None
    detectable: bool
    text: str
    defined_fraction: float | None = None
    diff_hw: float | None = None
    mde: float | None = None


class ControlModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    none: float | None
    none_ci: Interval
    text: str | None = None
    random_raises: bool | None = None
    contains_all: bool | None = None
    per_strength: list[ControlPoint] = []


class GenerationRecord(BaseModel):
    prompt: int
    seed: int
    condition: str
    arm: str
    mode: str
    scale: str
    strength: float
    text: str
    n_tokens: int
    finish: str
    concept: float | None
    zeroshot: float | None = None
    probe: float | None = None
    sae: float | None
    words: float | None
    logprob: float | None
    distinct2: float
    token_ids: list[int]


class ExperimentResponse(BaseModel):
    profile: str
    fingerprint: str
    hook_name: str
    anchor: int
    children: list[int]
    eval_prompts: list[str]
    concept_name: str = "concept"
    contrast_name: str = "contrast"
    measure: MeasureModel | None = None
    probe: ProbeModel
    typical: list[TypicalModel]
    selectivity: dict[str, dict[str, float]]
    conditions: list[str]
    n_prompts: int
    n_seeds: int
    n_generations: int
    n_tokens: int
    decoder: str
    table: list[TableRow]
    verdicts: list[VerdictModel]
    verdict: str
    control: ControlModel
    generations: list[GenerationRecord]
    seconds: float  # the phases' times (seconds_sets / _generate / _score) are in the engine result and the CLI only
    tokens_per_s: float | None  # None when the generations were read back from a checkpoint
    n_generations_from_checkpoint: int = 0


ExperimentJobStatus = JobStatus  # the job runner's status (same shape as discovery's)
