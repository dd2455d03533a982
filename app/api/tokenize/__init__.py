"""Token count of a prompt as the model will read it (the forms' live counter), against the prompt token limit."""
from app.api.tokenize.routes import router
from app.api.tokenize.schemas import TokenizeRequest, TokenizeResponse
from app.api.tokenize.service import run_tokenize

__all__ = ["router", "TokenizeRequest", "TokenizeResponse", "run_tokenize"]
