"""A small atlas of the tiny profile, for API / page / browser tests (built in memory, never in data/)."""
from __future__ import annotations

import contextlib

TEXT = ("The capital of France is Paris. French wine and cheese come from France. "
        "Berlin is in Germany; Rome is in Italy. Water boils at 100 degrees. ") * 20


def tiny_atlas(engine, n_windows: int = 16, ctx: int = 64):
    from app.engine import atlas as at

    ids = engine.tokenizer.encode(TEXT, add_special_tokens=False)
    windows = [ids[i * ctx: (i + 1) * ctx] for i in range(n_windows)]
    fp = at.atlas_fingerprint(engine.profile.name, engine.hook_name, engine.fingerprint)
    with engine.session():
        return at.build_atlas(engine.model, engine.saes, windows, engine.hook_name, fingerprint=fp,
                              sink_norm=engine.profile.sink_norm, meta={"corpus": {"source": "test"}})


@contextlib.contextmanager
def with_atlas(engine, atlas):
    """The engine with this atlas for the duration (restores what it had)."""
    old = engine.atlas, engine.atlas_status
    engine.atlas, engine.atlas_status = atlas, "ok"
    try:
        yield engine
    finally:
        engine.atlas, engine.atlas_status = old
