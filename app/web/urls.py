"""The address grammar of the /generate and /temperature pages: `to_query` writes a view's inputs as its page
address and `from_query` reads that address (or the page's form) back into the request, one grammar per page.

    /generate?prompt=...&chat=on&max_new_tokens=32&...&f=fine:11150:add:40.0&f=...&view=steer
    /generate?...&f=coarse:5:add:0.0&strengths=-8.0,0.0,8.0&view=dose
    /temperature?prompt=...&t=0.5&t=1.0&view=temperature        /temperature?...&system_b=...&view=system_shift

f = sae:index:mode:value (repeatable; the form sends f_sae/f_index/f_mode/f_value columns instead), chat and
the checkboxes as on/off, lists as repeated or comma-separated values, None left out. Fork (/e/<id>) links
through `to_url`, the pages read through `from_query`, the fragments push `to_url` of what they computed.
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Any, Mapping
from urllib.parse import urlencode

from fastapi import HTTPException
from pydantic import BaseModel

from app.api.errors import check_feature_index, errors_of
from app.api.steering.schemas import DoseRequest, GenerateRequest, SteerRequest, SystemShiftRequest, TemperatureRequest
from app.web.codecs import Codec
from app.web.forms import cap_url, flag, last, values

# kind -> (page path, the page's view=... name, request model)
PAGES: dict[str, tuple[str, str, type[BaseModel]]] = {
    "generation": ("/generate", "generation", GenerateRequest),
    "steering": ("/generate", "steer", SteerRequest),
    "dose": ("/generate", "dose", DoseRequest),
    "temperature": ("/temperature", "temperature", TemperatureRequest),
    "system_shift": ("/temperature", "system_shift", SystemShiftRequest),
}
KIND_OF_VIEW = {view: kind for kind, (_, view, _) in PAGES.items()}
# the tab title's names (app/web/codecs.py `Codec.title`): each page's, and each view's on it
PAGE_NAMES = {"/generate": "Generate & steer", "/temperature": "Temperature & system prompts"}
VIEW_NAMES = {"generation": "Generation", "steering": "Steered vs unsteered", "dose": "Dose-response",
              "temperature": "Temperatures", "system_shift": "System prompt shift"}
TEXT = ("prompt", "system_prompt", "system_a", "system_b")
NUMBERS = ("max_new_tokens", "temperature", "top_k", "top_p", "seed", "top_n", "promoted_top")
FLAGS = ("generated_only", "skip_sinks", "no_default_system")


def feature_param(f: Mapping[str, Any]) -> str:
    """One steering feature as f=sae:index:mode:value."""
    return f"{f['sae']}:{f['index']}:{f.get('mode', 'add')}:{f.get('value', 0.0)}"


def parse_features(params) -> list[dict]:
    """Feature rows from the address (f=sae:index:mode:value) or the form (f_sae/f_index/f_mode/f_value lists)."""
    feats = []
    for s in values(params, "f"):
        parts = s.split(":")
        if len(parts) >= 2 and s:
            feats.append({"sae": parts[0], "index": parts[1], "mode": parts[2] if len(parts) > 2 else "add",
                          "value": parts[3] if len(parts) > 3 else "0"})
    cols = [values(params, k) for k in ("f_sae", "f_index", "f_mode", "f_value")]
    for sae, idx, mode, val in zip(*cols):
        if idx != "":
            feats.append({"sae": sae, "index": idx, "mode": mode, "value": val or "0"})
    return feats


MODES = ("add", "clamp")
F_EXAMPLE = "f=coarse:12:add:8"


def feature_problems(params, saes) -> list[str]:
    """What is wrong with each f=sae:index:mode:value of an address, one line each naming the value (the page shows
    them in place; `parse_features` would leave a malformed one out without a word)."""
    out = []
    for s in values(params, "f"):
        parts = s.split(":")
        if not 2 <= len(parts) <= 4:
            out.append(f"f: {s!r} is not sae:index:mode:value (e.g. {F_EXAMPLE})")
            continue
        sae, idx, mode, val = (parts + ["add", "0"][len(parts) - 2:])[:4]
        if not re.fullmatch(r"-?[0-9]{1,12}", idx):
            out.append(f"f: index {idx!r} in {s!r} is not a whole number (e.g. {F_EXAMPLE})")
            continue
        try:
            check_feature_index(saes, sae, int(idx), ["f"])
        except HTTPException as exc:
            out += [line if line.startswith("f: ") else f"f: {line}" for line in errors_of(exc)]
            continue
        if mode not in MODES:
            out.append(f"f: mode {mode!r} in {s!r} is not one of {', '.join(MODES)}")
        try:
            ok = math.isfinite(float(val))
        except ValueError:
            ok = False
        if not ok:
            out.append(f"f: strength {val!r} in {s!r} is not a number")
    return out


# the temperature page's views read a missing chat field as on (its selector's default); "auto" stays auto
CHAT_ON_BY_DEFAULT = ("temperature", "system_shift")


def _list(params, key: str) -> list[str]:
    """Repeated values, or one comma-separated value."""
    vals = values(params, key)
    if len(vals) == 1 and "," in vals[0]:
        vals = vals[0].split(",")
    return [v.strip() for v in vals if v.strip()]


def to_query(kind: str, inputs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A view's inputs as its page's query pairs (the grammar above)."""
    q = [(k, str(inputs[k])) for k in TEXT if inputs.get(k) is not None]
    if inputs.get("chat") is not None:
        q.append(("chat", "on" if inputs["chat"] else "off"))
    elif kind in CHAT_ON_BY_DEFAULT:
        q.append(("chat", "auto"))  # an older snapshot's "auto": the page's default would read it as on
    q += [(k, str(inputs[k])) for k in NUMBERS if inputs.get(k) is not None]
    q += [(k, "on" if inputs[k] else "off") for k in FLAGS if inputs.get(k) is not None]
    feats = inputs.get("steering") or ([inputs["feature"]] if inputs.get("feature") else [])
    q += [("f", feature_param(f)) for f in feats]
    if inputs.get("strengths") is not None:
        q.append(("strengths", ",".join(str(s) for s in inputs["strengths"])))
    q += [("t", str(t)) for t in inputs.get("temperatures") or ()]
    q.append(("view", PAGES[kind][1]))
    return q


def to_url(kind: str, inputs: Mapping[str, Any]) -> str | None:
    """The page address that reproduces this view; None when too long to push."""
    return cap_url(f"{PAGES[kind][0]}?{urlencode(to_query(kind, inputs))}")


def from_query(kind: str, params) -> BaseModel:
    """The request an address or a form describes (raises pydantic ValidationError naming the field)."""
    model = PAGES[kind][2]
    raw: dict[str, Any] = {"prompt": last(params, "prompt") or ""}
    raw |= {k: v for k in (*TEXT[1:], *NUMBERS) if (v := last(params, k)) is not None}
    raw |= {k: v for k in ("chat", *FLAGS) if (v := flag(last(params, k), None)) is not None}
    feats = parse_features(params)
    if kind == "dose":
        if feats:
            raw["feature"] = feats[0]
        if (s := last(params, "strengths")) is not None:
            raw["strengths"] = _list({"strengths": s}, "strengths")
    else:
        raw["steering"] = feats
    if kind in CHAT_ON_BY_DEFAULT and last(params, "chat") is None:
        raw["chat"] = True  # one meaning of "no system prompt" in both views: the chat selector, default on
    if kind == "temperature" and (temps := _list(params, "t")):
        raw["temperatures"] = temps
    return model.model_validate({k: v for k, v in raw.items() if k in model.model_fields})


CODECS = {kind: Codec(path, partial(to_url, kind), partial(from_query, kind), PAGE_NAMES[path], VIEW_NAMES[kind])
          for kind, (path, _, _) in PAGES.items()}
