"""What every loader shares: where model files live, the loaded model's record, the one error."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from app.engine.profiles import DATA_DIR

log = logging.getLogger("app.engine.loading")  # the name it had as one module
MODELS_DIR = DATA_DIR / "models"


class ProfileUnavailable(RuntimeError):
    """A profile's weights are not on this machine; the message says what is missing and how to get it."""


@dataclass
class LoadedModel:
    model: object  # HookedTransformer
    tokenizer: object
    chat_template: str | None
    seconds: float
    source: str  # "cache" | "gguf" | "pretrained" | "random"
