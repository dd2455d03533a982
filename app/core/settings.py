"""Every limit and knob in one settings object (env prefix ASN_); shown in the UI, enforced before model work."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.engine.profiles import DATA_DIR
from app.http.auth import DEFAULT_RATE_LIMIT_ROUTES

ROOT = Path(__file__).resolve().parents[2]  # the checkout: templates/, static/, data/


class Limits(BaseSettings):
    """Input limits: a request outside them gets a 422 naming the field and the limit."""

    model_config = SettingsConfigDict(env_prefix="ASN_LIMIT_", frozen=True)

    max_prompt_chars: int = 8_000
    max_prompt_tokens: int = 256
    max_system_prompt_chars: int = 4_000
    max_new_tokens: int = 128
    max_top_k: int = 1_000
    max_features_shown: int = 50
    max_steering_features: int = 8
    max_steering_strength: float = 500.0
    max_temperature: float = 5.0
    max_temperatures: int = 8
    max_dose_points: int = 9
    max_prompt_set_size: int = 1_000
    max_prompt_set_chars: int = 400_000
    max_body_bytes: int = 1_000_000
    max_seed: int = 2**32 - 1
    max_json_depth: int = 32  # JSON bodies nested deeper -> 422 (before any route parses them)
    # saved explorations (issue 6)
    max_exploration_bytes: int = 1_000_000  # one saved/imported document, as compact JSON
    max_title_chars: int = 200
    max_note_chars: int = 4_000
    # concept discovery (issue 5)
    max_discovery_coarse: int = 20  # coarse features mapped to fine ones
    max_discovery_fine: int = 200  # top fine features scored against them
    # feature search (issue 10)
    max_search_chars: int = 200  # one search query
    # steering experiment (issue 14)
    max_experiment_prompts: int = 64  # evaluation prompts
    max_experiment_strengths: int = 6
    max_experiment_children: int = 8  # fine features steered with the anchor
    max_experiment_seeds: int = 4
    max_experiment_tokens: int = 60_000  # prompts x conditions x seeds x max_new_tokens
    # activation patching and attention heads (issue 27)
    max_patching_tokens: int = 48  # clean/corrupt length: the exact grid is layers x tokens patched runs
    max_attention_tokens: int = 32  # the attention panel returns layers x heads x tokens² weights


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASN_", frozen=True)

    profile: str = "smollm2-135m"
    device: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    store_url: str = Field(default=f"sqlite:///{DATA_DIR / 'explorations.db'}")
    max_waiting: int = 8  # requests queued for the model before 503
    wait_timeout_s: float = 30.0
    # shared deployment (issue 18): background jobs live in the store; a job whose replica has not written a
    # heartbeat for job_lease_s is marked failed by any other replica
    job_heartbeat_s: float = Field(default=2.0, gt=0)
    job_lease_s: float = Field(default=15.0, gt=0)
    # access token for a shared address (--auth-token / ASN_AUTH_TOKEN): every route but /health then needs it
    auth_token: SecretStr | None = None
    # per-client limit on expensive routes (POSTs matching rate_limit_routes): 0 = off; over it -> 429 + Retry-After
    rate_limit_per_minute: float = Field(default=0.0, ge=0)
    rate_limit_burst: int = Field(default=10, ge=1)
    rate_limit_routes: str = DEFAULT_RATE_LIMIT_ROUTES
    # operator listing of every saved exploration (GET /api/explorations?scope=all with X-Admin-Token); none: off
    admin_token: SecretStr | None = None
    # key signing computed results (app/explorations/provenance.py); none: a random key kept in the store, shared by replicas
    signing_key: SecretStr | None = None
    limits: Limits = Field(default_factory=Limits)
    # feature atlases live in <atlas_root>/<profile>/ (default: data/atlas for the embedded profile, else data/cache/atlas)
    atlas_root: Path | None = None

    @property
    def data_dir(self) -> Path:
        return DATA_DIR


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment; called only by create_app (never at import time)."""
    return Settings()
