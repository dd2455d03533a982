"""Compare, patching, attention and head-score JSON routes (thin: parse, call the service)."""
from __future__ import annotations

from fastapi import APIRouter

from app.api.patching.service import run_attention, run_compare, run_heads, run_patching
from app.api.routing import post_service

router = APIRouter(prefix="/api", tags=["patching"])

post_service(router, "/compare", run_compare,
             "Two prompts side by side: both SAEs' features that differ most (at a position and summed), both "
             "next-token distributions and the logit difference of two chosen tokens.")
post_service(router, "/patching", run_patching,
             "Activation patching: grid[layer][position] is the normalised logit difference (0 as corrupt, 1 as clean) "
             "when that clean activation of `site` replaces the corrupt one (batched exact runs); plus SAE-feature "
             "patching at the SAE's hook and attribution patching with its correlation. 422 when clean and corrupt "
             "tokenise to different lengths (both tokenisations shown) or answer/wrong is not one token.")
post_service(router, "/attention", run_attention,
             "Every head's attention pattern on the prompt and its direct logit attribution to the next token.")
post_service(router, "/heads", run_heads,
             "Every head scored as previous-token, induction, duplicate-token and first-position head on repeated "
             "random sequences, each with the top head's pattern.")
