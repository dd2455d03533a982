"""Tuned lens (Belrose et al. 2023): one affine translator per layer, read through the final norm and unembedding.

Layer l's readout is ln_final(h + A_l h + b_l) @ W_U: the tuned-lens package's parametrisation (its translators
add residually), stored here folded as h @ weight[l].T + bias[l] with weight[l] = I + A_l so that a whole lens
stack translates in one batched matmul. Rows follow the logit lens: the embedding, then blocks 0 .. n-2's
resid_post (n translators); the last block's output is the model's own and needs none.

On disk: the package's format (config.json + params.pt holding `{i}.weight` = A_i and `{i}.bias`), fp16 here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

LENS_KINDS = ("logit", "tuned")
HF_LENS_SPACE = "spaces--AlignmentResearch--tuned-lens"  # where the package's published lenses sit in the HF cache


@dataclass(frozen=True)
class TunedLens:
    """Translators for n layers: weight [n, d, d] (= I + A), bias [n, d] float32; h' = h @ weight[l].T + bias[l]."""

    weight: torch.Tensor
    bias: torch.Tensor
    source: str = ""
    config: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[-1])

    @property
    def fingerprint(self) -> str:
        """A short id of these weights (the lens memo key must change when the lens does)."""
        return f"{float(self.weight.double().sum()):.6e}/{float(self.bias.double().sum()):.6e}"


class LensUnavailable(Exception):
    """No usable tuned lens (one line: which folder, what is wrong)."""


def identity_lens(n_layers: int, d_model: int) -> TunedLens:
    """The identity-initialised lens (every translator h -> h: the logit lens)."""
    return TunedLens(torch.eye(d_model).repeat(n_layers, 1, 1), torch.zeros(n_layers, d_model), "identity")


def translate(lens: TunedLens, stack: torch.Tensor) -> torch.Tensor:
    """Lens stack [n+1, pos, d] -> the same with rows 0..n-1 translated (one batched matmul); the last row kept."""
    n = lens.n_layers
    if stack.shape[0] != n + 1 or stack.shape[-1] != lens.d_model:
        raise ValueError(f"lens for {n} layers of width {lens.d_model}; stack is {tuple(stack.shape)}")
    w, b = lens.weight.to(stack.device, stack.dtype), lens.bias.to(stack.device, stack.dtype)
    out = torch.baddbmm(b[:, None, :], stack[:n], w.transpose(1, 2))  # [n, pos, d]
    return torch.cat([out, stack[n:]])


def save_tuned_lens(lens: TunedLens, folder: Path, base_model: str, extra: dict | None = None) -> None:
    """config.json + params.pt in the tuned-lens package's layout (A = weight - I), fp16."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    eye = torch.eye(lens.d_model)
    state = {}
    for i in range(lens.n_layers):
        state[f"{i}.weight"] = (lens.weight[i] - eye).half().contiguous()
        state[f"{i}.bias"] = lens.bias[i].half().contiguous()
    torch.save(state, folder / "params.pt")
    cfg = {"base_model_name_or_path": base_model, "d_model": lens.d_model, "num_hidden_layers": lens.n_layers,
           "bias": True, "lens_type": "linear_tuned_lens", **(extra or {})}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))


def shown(folder: Path) -> str:
    """A folder as the UI names it: relative to the checkout when inside it, else as given."""
    from app.engine.profiles import ROOT

    try:
        return str(Path(folder).resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)


def load_tuned_lens(folder: Path, n_layers: int, d_model: int) -> TunedLens:
    """A lens folder (config.json + params.pt, the package's format) for a model with n_layers blocks of width
    d_model -> TunedLens (float32); raises LensUnavailable naming what does not fit."""
    folder = Path(folder)
    name = shown(folder)
    cfg_path, params = folder / "config.json", folder / "params.pt"
    if not cfg_path.is_file() or not params.is_file():
        raise LensUnavailable(f"no tuned lens in {name} (config.json + params.pt)")
    try:
        cfg = json.loads(cfg_path.read_text())
        state = torch.load(params, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which
        raise LensUnavailable(f"tuned lens in {name} is unreadable: {type(e).__name__}: {e}") from None
    n, d = int(cfg.get("num_hidden_layers", -1)), int(cfg.get("d_model", -1))
    if (n, d) != (n_layers, d_model):
        raise LensUnavailable(f"tuned lens in {name} is for {n} layers of width {d}; "
                              f"the model has {n_layers} of width {d_model}")
    eye = torch.eye(d)
    try:
        weight = torch.stack([state[f"{i}.weight"].float() + eye for i in range(n)])
        bias = torch.stack([state.get(f"{i}.bias", torch.zeros(d)).float() for i in range(n)])
    except KeyError as e:
        raise LensUnavailable(f"tuned lens in {name} lacks translator {e}") from None
    if weight.shape != (n, d, d) or not bool(torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise LensUnavailable(f"tuned lens in {name} has malformed or non-finite translators")
    return TunedLens(weight, bias, str(folder), cfg)


def lens_folders(profile, root: Path | None = None, hf_home: Path | None = None) -> list[Path]:
    """Where a profile's tuned lens may be, in order: `<root>/<profile>` (default data/lens), then the tuned-lens
    project's published lens for the model's HF repo in the local HF cache (lens/<repo name> in its space)."""
    import os

    from app.engine.profiles import DATA_DIR

    out = [Path(root or DATA_DIR / "lens") / profile.name]
    repo = (getattr(profile, "hf_repo", "") or "").split("/")[-1]
    if repo:
        home = hf_home or os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
        hub = Path(home) / "hub"
        out += sorted((hub / HF_LENS_SPACE / "snapshots").glob(f"*/lens/{repo}"))
    return out


def find_tuned_lens(profile, n_layers: int, d_model: int, root: Path | None = None,
                    hf_home: Path | None = None) -> tuple[TunedLens | None, str]:
    """(lens, "ok") from the first folder that holds one, else (None, why: the folders looked in / what is wrong)."""
    problems = []
    for folder in lens_folders(profile, root, hf_home):
        try:
            return load_tuned_lens(folder, n_layers, d_model), "ok"
        except LensUnavailable as e:
            problems.append(str(e))
    return None, "; ".join(problems) + " — train one with `make lens` (embedded profile) or put one there"
