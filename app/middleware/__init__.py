"""Request guards and error mapping shared by every route (installed by `install(app, settings)`).

- `BodyGuardMiddleware` (pure ASGI): a body over `Limits.max_body_bytes` gets 413 before anything parses it
  (Content-Length checked first; chunked bodies are counted while read). JSON bodies are then screened once
  for what no route can handle: NaN / +-Infinity / overflowing numbers (1e999), lone surrogates, nesting
  deeper than `Limits.max_json_depth` -> 422 naming the field. The buffered body is replayed to the app;
  later `receive()` calls go to the server, so streaming routes still see a client disconnect.
- `SecurityHeadersMiddleware`: a strict Content-Security-Policy (scripts only from the app's own origin; no
  inline scripts, no eval; Plotly figures travel in `<script type="application/json">` data blocks, which CSP
  does not execute), nosniff, no framing, no referrer.
- Exception handlers: out of memory (torch.cuda.OutOfMemoryError, CPU allocator failures) -> 503 + Retry-After;
  a response that cannot be JSON-encoded because it holds NaN/inf -> 422 `non_finite_result` (never a 500
  from the encoder); text the tokenizer cannot encode (lone surrogates) -> 422; SQLite errors and an
  unreachable PostgreSQL store (`StoreUnavailable`) -> 503 + Retry-After ("nothing was saved").
- OpenAPI: every operation documents 503 (+ Retry-After), every operation with a body documents 413 and 422,
  so property-based fuzzing can check that every status the app answers is documented.
"""
from __future__ import annotations

from app.middleware.body_guard import BodyGuardMiddleware, _Constant, _parse_float, error_item, scan_json
from app.middleware.handlers import RETRY_AFTER_S, install
from app.middleware.headers import CSP, SecurityHeadersMiddleware

__all__ = ["BodyGuardMiddleware", "_Constant", "_parse_float", "error_item", "scan_json", "RETRY_AFTER_S", "install",
           "CSP", "SecurityHeadersMiddleware"]
