"""How a feature is named wherever it is shown: "C-1332" (coarse SAE), "F-1475" (fine SAE). The one helper:
templates call it as the global `feature_name(sae, index)`; figures import it."""
from __future__ import annotations

PREFIX = {"coarse": "C", "fine": "F"}


def feature_name(sae: str, index: int | str) -> str:
    """'C-1332' for ("coarse", 1332), 'F-7' for ("fine", 7); another SAE name is kept: 'mid-3'."""
    return f"{PREFIX.get(str(sae), str(sae))}-{index}"
