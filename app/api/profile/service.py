from __future__ import annotations

import dataclasses

from app.api.health import pair_summary
from app.api.profile.schemas import OtherProfile, ProfileResponse, SAEInfoModel
from app.engine.availability import missing_parts
from app.engine.profile_info import describe
from app.engine.profiles import PROFILES_DIR, load_profiles

ADHOC = ("python -m app serve --model NAME_OR_PATH --hook HOOK --coarse RELEASE:ID|PATH --fine RELEASE:ID|PATH")


def _lens_status(engine) -> str | None:
    """The tuned lens the Analyze switch reads: "ok (<folder>)" or why there is none."""
    status = getattr(engine, "tuned_lens_status", None)
    lens = getattr(engine, "tuned_lens", None)
    if status == "ok" and lens is not None:
        from app.engine.tuned_lens import shown

        return f"ok ({shown(lens.source)})"
    return status


def _position_artefacts(atlas) -> dict[str, int] | None:
    if atlas is None:
        return None
    from app.engine.atlas import position_artefacts

    return {name: int(len(position_artefacts(atlas, name))) for name in atlas.summaries}


def run_profile(engine, settings) -> ProfileResponse:
    """The loaded profile (sizes from the tensors; no model work, so no session) and the shipped alternatives."""
    info = describe(engine.profile, engine.model, engine.saes)
    d = dataclasses.asdict(info)
    d["saes"] = [SAEInfoModel(**s) for s in d["saes"]]
    others = [OtherProfile(name=p.name, display=p.display, model_name=p.model_name, hook_name=p.hook_name,
                           missing=missing_parts(p), command=f"make run PROFILE={p.name}")
              for p in load_profiles(PROFILES_DIR).values()]
    return ProfileResponse(**d, device=engine.device, fingerprint=engine.fingerprint,
                           atlas=getattr(engine, "atlas_status", None), tuned_lens=_lens_status(engine),
                           atlas_position_artefacts=_position_artefacts(getattr(engine, "atlas", None)),
                           pair_independence=pair_summary(getattr(engine, "pair_check", None)),
                           profiles=others, adhoc_command=ADHOC)
