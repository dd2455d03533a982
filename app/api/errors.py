"""The error shapes every route uses: 422 naming the field (and the limit), 404 naming the valid range."""
from __future__ import annotations

from fastapi import HTTPException


def unprocessable(loc: list, msg: str, type_: str = "value_error", **ctx) -> HTTPException:
    """422 with one FastAPI-style item; loc starts with where the field is ("body", "query", "path")."""
    item: dict = {"loc": list(loc), "msg": msg, "type": type_}
    if ctx:
        item["ctx"] = ctx
    return HTTPException(422, detail=[item])


def out_of_range(loc: list, msg: str) -> HTTPException:
    """404 for an index outside its valid range (the message names the range)."""
    return HTTPException(404, detail=[{"loc": list(loc), "type": "out_of_range", "msg": msg}])


def no_such_feature(sae: str, index: int, width: int) -> str:
    """The one wording of a feature index outside its SAE, naming the valid range."""
    return f"feature index {index} does not exist: SAE {sae} has {width} features (0..{width - 1})"


def check_feature_index(saes, sae: str, index: int, loc: list, status: int = 404) -> int:
    """The SAE's width when 0 <= index < width. Otherwise a 404 (422 where the route documents that) naming the
    valid range; an unknown SAE name is a 404 naming the SAEs there are."""
    if sae not in saes:
        raise HTTPException(404, detail=f"no SAE named {sae!r}; this profile has {', '.join(saes)}")
    width = int(saes[sae].cfg.d_sae)
    if not 0 <= int(index) < width:
        msg = no_such_feature(sae, index, width)
        raise out_of_range(loc, msg) if status == 404 else unprocessable(loc, msg)
    return width
