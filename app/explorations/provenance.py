"""A saved result is the server's own: results the server computed carry its signature (HMAC-SHA256).

The key is `Settings.signing_key` or, by default, a random secret kept in the store (`Store.shared_secret`), so
every replica on one store signs and verifies alike. When a view renders a result with its Save form, the
replica remembers the result's signature (`remember_result`, called by templates/fragments/_save.html; it prints
nothing, so the HTML is unchanged); a save of a remembered result is signed at once. Any other save (the JSON
API, a save reaching another replica, a form whose fields were edited) is recomputed with the view's run
function and signed only if the recomputation matches (the Re-run comparison: floats within a relative 1e-4,
timings ignored). Imported documents are never signed. The signature lives beside the document in the store (never inside it, so an exported file carries
none); a document without a valid one is shown as "imported - not computed here".
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import json
import threading

from app.explorations.registry import ViewRegistry, to_jsonable

_key_lock = threading.Lock()


def canonical(kind: str, inputs, result) -> bytes:
    """The signed bytes: kind, inputs and result as sorted compact JSON."""
    return json.dumps({"kind": kind, "inputs": to_jsonable(inputs), "result": to_jsonable(result)}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode()


def sign(key: bytes, kind: str, inputs, result) -> str:
    return hmac.new(key, canonical(kind, inputs, result), hashlib.sha256).hexdigest()


def verify(key: bytes, signature: str | None, kind: str, inputs, result) -> bool:
    if not signature or not isinstance(signature, str):
        return False
    try:
        expected = sign(key, kind, inputs, result)
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode())


def signing_key(app) -> bytes:
    """This app's key (cached on app.state): settings.signing_key, else the store's shared secret."""
    key = getattr(app.state, "signing_key", None)
    if key is None:
        with _key_lock:
            key = getattr(app.state, "signing_key", None)
            if key is None:
                configured = getattr(app.state.settings, "signing_key", None)
                secret = configured.get_secret_value() if configured is not None else ""
                key = (secret or app.state.store.shared_secret("result-signing")).encode()
                app.state.signing_key = key
    return key


REMEMBERED = 4096  # signatures of recently shown results kept per replica


def remember_result(request, kind: str, inputs, result) -> str:
    """Jinja global: note that this replica computed and showed this result (for its Save button); prints ''."""
    app = request.app
    sig = sign(signing_key(app), kind, inputs, result)
    with _key_lock:
        seen = getattr(app.state, "computed_results", None)
        if seen is None:
            seen = app.state.computed_results = collections.OrderedDict()
        seen[sig] = None
        seen.move_to_end(sig)
        while len(seen) > REMEMBERED:
            seen.popitem(last=False)
    return ""


def _remembered(app, sig: str) -> bool:
    with _key_lock:
        return sig in (getattr(app.state, "computed_results", None) or {})


def signature_for_save(app, engine, settings, views: ViewRegistry, kind: str, inputs: dict, result: dict) -> str | None:
    """The signature to store with a save, or None when the result is not one this server computes."""
    key = signing_key(app)
    own = sign(key, kind, inputs, result)
    if _remembered(app, own):
        return own
    spec = views.get(kind)
    if spec is None:  # a kind this server cannot compute: kept, shown as not computed here
        return None
    req = spec.request_model.model_validate(inputs)
    live = to_jsonable(spec.run_fn(engine, settings, req))
    return sign(key, kind, inputs, result) if views.compare(kind, result, live).match else None


def is_computed(app, record) -> bool:
    """Does a stored record carry a valid signature of its own kind, inputs and result?"""
    if record is None or not record.signature:
        return False
    doc = record.doc
    return verify(signing_key(app), record.signature, doc.get("kind"), doc.get("inputs"), doc.get("result"))
