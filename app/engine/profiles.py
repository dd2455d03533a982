"""Model profiles as data: TOML files in `profiles/` (model, hook point, coarse/fine SAE pair), read on demand.

A profile file (see profiles/*.toml):

    name = "gpt2-small"                 # defaults to the file's stem
    display = "GPT-2 small + ..."
    hook = "blocks.8.hook_resid_pre"    # any hook point the SAEs were trained on
    prepend_bos = true                  # prompts get the tokenizer's BOS
    sink_norm = 2000.0                  # optional: residual norm above which a position is a sink
    [model]
    source = "pretrained"               # pretrained (transformer-lens name) | hf_dir | gguf_file | gguf_wheel | random
    name = "gpt2-small"                 # TL name, or a path (hf_dir / gguf_file; relative to the repo root)
    hf_repo = "openai-community/gpt2"   # where the weights come from (for the "missing" message)
    gated = false                       # needs a Hugging Face token
    dtype = { cpu = "float32", cuda = "float32" }
    from_pretrained_kwargs = { ... }    # passed to transformer-lens (e.g. center_writing_weights)
    [sae.coarse]                        # release + id (sae-lens), or path = "folder saved by sae-lens"
    release = "..."; id = "..."; display = "..."; neuronpedia = "..." (else taken from sae-lens's entry)
    [sae.fine] ...
    [options] ...                       # loader options (random model sizes, wheel record, SAE cfg overrides)

Nothing is read at import time: `load_profiles(folder)` reads a folder, `get_profile(name_or_path)` one profile.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data"
PROFILES_DIR = ROOT / "profiles"
DEFAULT_PROFILE = "smollm2-135m"
LOADERS = ("gguf", "pretrained", "hf_dir", "gguf_file", "random")
_SOURCE_ALIASES = {"gguf_wheel": "gguf", "tl": "pretrained", "transformer_lens": "pretrained", "hf": "hf_dir"}


class ProfileError(ValueError):
    """A profile file or ad hoc profile is malformed (one line: which file, which key)."""


@dataclass(frozen=True)
class SAESpec:
    """Where an SAE comes from: a local sae-lens folder, or a sae-lens release + id."""

    name: str  # "coarse" | "fine"
    display: str
    path: Path | None = None
    release: str | None = None
    sae_id: str | None = None
    neuronpedia: str | None = None  # e.g. "gemma-2-2b/12-gemmascope-res-16k"

    @property
    def source(self) -> str:
        if self.path is not None:
            return str(self.path)
        if self.release is not None:
            return f"{self.release}:{self.sae_id}"
        return "random"


@dataclass(frozen=True)
class Profile:
    """One model + hook point + coarse/fine SAE pair."""

    name: str
    display: str
    loader: str  # one of LOADERS
    hook_layer: int
    coarse: SAESpec
    fine: SAESpec
    model_name: str = ""  # transformer-lens name, or the path of an HF folder / GGUF file
    dtype_cuda: str = "float32"
    # Residual norm above which a position is an attention sink / massive activation: left out of SAE
    # training, rankings and splicing (SmolLM2: position 0 ~20,000 and rare digits ~25,000 vs median ~160).
    sink_norm: float | None = None
    options: dict = field(default_factory=dict)
    hook: str = ""  # full hook name; "" = blocks.{hook_layer}.hook_resid_post
    prepend_bos: bool = False
    dtype_cpu: str = "float32"
    hf_repo: str = ""  # Hugging Face repo the weights come from (named when they are missing)
    gated: bool = False  # the repo needs an accepted licence and a token
    from_pretrained_kwargs: dict = field(default_factory=dict)
    source_file: Path | None = None

    @property
    def hook_name(self) -> str:
        return self.hook or f"blocks.{self.hook_layer}.hook_resid_post"

    def dtype_for(self, device: str) -> str:
        return self.dtype_cuda if str(device).startswith("cuda") else self.dtype_cpu


def hook_layer_of(hook: str) -> int:
    m = re.match(r"blocks\.(\d+)\.", hook)
    if not m:
        raise ProfileError(f"hook {hook!r}: expected blocks.<layer>.<hook point>")
    return int(m.group(1))


def _path(value: str | None, base: Path = ROOT) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _sae_spec(name: str, d: dict, where: str) -> SAESpec:
    unknown = set(d) - {"release", "id", "path", "display", "neuronpedia"}
    if unknown:
        raise ProfileError(f"{where}: [sae.{name}] unknown keys {sorted(unknown)}")
    if "path" in d and "release" in d:
        raise ProfileError(f"{where}: [sae.{name}] give either path or release + id, not both")
    if "release" in d and "id" not in d:
        raise ProfileError(f"{where}: [sae.{name}] release {d['release']!r} needs an id")
    display = d.get("display") or (d.get("id") or Path(d.get("path", "random")).name)
    return SAESpec(name, display, path=_path(d.get("path")), release=d.get("release"), sae_id=d.get("id"),
                   neuronpedia=d.get("neuronpedia"))


def profile_from_dict(d: dict, name: str | None = None, where: str = "profile") -> Profile:
    """Build a Profile from a parsed TOML document (ProfileError naming the key on a bad one)."""
    d = dict(d)
    name = d.pop("name", None) or name
    if not name:
        raise ProfileError(f"{where}: no name")
    model = d.pop("model", None)
    if not isinstance(model, dict):
        raise ProfileError(f"{where}: missing [model] table")
    source = _SOURCE_ALIASES.get(model.get("source", ""), model.get("source", ""))
    if source not in LOADERS:
        raise ProfileError(f"{where}: [model] source {model.get('source')!r}; expected one of {', '.join(LOADERS)}")
    hook = d.pop("hook", None)
    if not hook:
        raise ProfileError(f"{where}: missing hook (e.g. hook = \"blocks.8.hook_resid_pre\")")
    saes = d.pop("sae", {})
    for k in ("coarse", "fine"):
        if k not in saes:
            raise ProfileError(f"{where}: missing [sae.{k}] table")
    dtype = model.get("dtype", {})
    model_name = model.get("name", name)
    if source in ("hf_dir", "gguf_file"):
        model_name = str(_path(model_name))
    options = dict(d.pop("options", {}))
    if "wheel" in model:
        options["wheel"] = dict(model["wheel"])
    prof = Profile(
        name=name, display=d.pop("display", name), loader=source, hook_layer=hook_layer_of(hook),
        coarse=_sae_spec("coarse", saes["coarse"], where), fine=_sae_spec("fine", saes["fine"], where),
        model_name=model_name, dtype_cuda=dtype.get("cuda", "float32"), dtype_cpu=dtype.get("cpu", "float32"),
        sink_norm=d.pop("sink_norm", None), options=options, hook=hook, prepend_bos=bool(d.pop("prepend_bos", False)),
        hf_repo=model.get("hf_repo", ""), gated=bool(model.get("gated", False)),
        from_pretrained_kwargs=dict(model.get("from_pretrained_kwargs", {})),
    )
    d.pop("description", None)
    if d:
        raise ProfileError(f"{where}: unknown keys {sorted(d)}")
    return prof


def load_profile_file(path: Path) -> Profile:
    """One TOML profile file -> Profile (its name defaults to the file's stem)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc})") from None
    import dataclasses

    return dataclasses.replace(profile_from_dict(doc, path.stem, str(path)), source_file=path)


def load_profiles(folder: Path = PROFILES_DIR) -> dict[str, Profile]:
    """Every `*.toml` in `folder`, by profile name (sorted by file name)."""
    out: dict[str, Profile] = {}
    for f in sorted(Path(folder).glob("*.toml")):
        p = load_profile_file(f)
        if p.name in out:
            raise ProfileError(f"{f}: profile name {p.name!r} also defined in {out[p.name].source_file}")
        out[p.name] = p
    return out


def get_profile(name: str, folder: Path = PROFILES_DIR) -> Profile:
    """A profile by name (from `folder`) or by the path of a TOML file; KeyError names the known ones."""
    if name.endswith(".toml") and Path(name).exists():
        return load_profile_file(Path(name))
    profiles = load_profiles(folder)
    try:
        return profiles[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(profiles)}") from None


def parse_sae_arg(name: str, value: str) -> SAESpec:
    """`RELEASE:ID` (sae-lens) or a local folder saved by sae-lens -> SAESpec."""
    p = Path(value).expanduser()
    if p.exists() or value.startswith((".", "/", "~")):
        return SAESpec(name, p.name, path=p.resolve())
    if ":" not in value:
        raise ProfileError(f"--{name} {value!r}: expected RELEASE:ID (sae-lens) or an existing folder")
    release, sae_id = value.split(":", 1)
    return SAESpec(name, sae_id, release=release, sae_id=sae_id)


def adhoc_profile(model: str, hook: str, coarse: str, fine: str, prepend_bos: bool | None = None,
                  dtype_cuda: str = "float32") -> Profile:
    """A profile from command-line values: model = TL name, HF folder or .gguf file; SAEs RELEASE:ID or folder."""
    p = Path(model).expanduser()
    if p.suffix == ".gguf":
        loader, model_name = "gguf_file", str(p.resolve())
    elif p.is_dir():
        loader, model_name = "hf_dir", str(p.resolve())
    else:
        loader, model_name = "pretrained", model
    if prepend_bos is None:  # interpretability SAEs are trained with BOS for models whose tokenizer has one
        prepend_bos = loader == "pretrained"
    name = f"adhoc:{Path(model_name).name}"
    return Profile(name=name, display=f"{model} @ {hook} (ad hoc)", loader=loader, hook_layer=hook_layer_of(hook),
                   coarse=parse_sae_arg("coarse", coarse), fine=parse_sae_arg("fine", fine), model_name=model_name,
                   hook=hook, prepend_bos=prepend_bos, dtype_cuda=dtype_cuda)


def __getattr__(attr: str):
    """Back-compat, read on first use (never at import): PROFILES (the shipped folder), SMOLLM2_WHEEL."""
    if attr == "PROFILES":
        return load_profiles(PROFILES_DIR)
    if attr == "SMOLLM2_WHEEL":
        return get_profile("smollm2-135m").options["wheel"]
    raise AttributeError(attr)
