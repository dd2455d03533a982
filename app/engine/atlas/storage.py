"""The atlas on disk: save, load, fingerprints, folders, and the engine's load-or-say-why."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from app.engine.atlas.core import (
    ATLAS_VERSION,
    VALUE_DTYPE,
    Atlas,
    _assemble,
)


def save_atlas(atlas: Atlas, folder: Path) -> None:
    """Token ids (uint16 when they fit), the co-firing sample's sparse codes (uint16/int32 indices + fp16 values),
    per-feature summaries (with example contexts, word pairs, label counts), word index, label parts; atomic swap."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".writing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    small = len(atlas.tokens) == 0 or int(atlas.tokens.max()) < 65536
    np.save(tmp / "tokens.npy", atlas.tokens.astype(np.uint16 if small else np.int32))
    np.save(tmp / "valid.npy", np.packbits(atlas.valid))
    for n, m in atlas.codes.items():
        itype = np.uint16 if m.shape[1] <= 65536 else np.int32
        np.savez(tmp / f"codes_{n}.npz", data=m.data.astype(VALUE_DTYPE), indices=m.indices.astype(itype),
                 indptr=m.indptr.astype(np.int64), shape=np.asarray(m.shape))
        np.savez_compressed(tmp / f"summary_{n}.npz", **atlas.summaries[n])
    (tmp / "label_parts.json").write_text(json.dumps(atlas.label_parts, ensure_ascii=False), encoding="utf-8")
    w = atlas.words
    (tmp / "words.json").write_text(json.dumps(list(w.get("words", [])), ensure_ascii=False),
                                        encoding="utf-8")
    np.savez_compressed(tmp / "words.npz", n_pos=np.asarray(w.get("n_pos", []), np.int32),
                        first=np.asarray(w.get("first", []), np.int64))
    strings = sorted(atlas.token_strings.items())
    (tmp / "token_strings.json").write_text(json.dumps([[i, s] for i, s in strings]))
    (tmp / "meta.json").write_text(json.dumps({**atlas.meta, "fingerprint": atlas.fingerprint, "ctx": atlas.ctx,
                                               "saes": list(atlas.codes)}, indent=2))
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old)
    else:
        tmp.rename(folder)


def read_meta(folder: Path) -> dict | None:
    f = Path(folder) / "meta.json"
    return json.loads(f.read_text()) if f.exists() else None


def load_atlas(folder: Path) -> Atlas | None:
    """The atlas saved in `folder`, or None when there is none."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta is None:
        return None
    tokens = np.load(folder / "tokens.npy").astype(np.int32)
    valid = np.unpackbits(np.load(folder / "valid.npy"))[: len(tokens)].astype(bool)
    codes, summaries = {}, {}
    for n in meta["saes"]:
        z = np.load(folder / f"codes_{n}.npz")
        codes[n] = sp.csr_matrix((z["data"].astype(np.float32), z["indices"].astype(np.int32), z["indptr"]),
                                 shape=tuple(z["shape"]))
        with np.load(folder / f"summary_{n}.npz") as s:
            summaries[n] = {k: s[k] for k in s.files}
    strings = {int(i): s for i, s in json.loads((folder / "token_strings.json").read_text())}
    parts, words = {}, {}
    if meta.get("version", 1) >= 2:  # a version-1 folder (full codes, nothing precomputed) loads for compact.upgrade
        parts = json.loads((folder / "label_parts.json").read_text(encoding="utf-8"))
        with np.load(folder / "words.npz") as z:
            words = {"words": json.loads((folder / "words.json").read_text(encoding="utf-8")),
                     "n_pos": z["n_pos"].astype(np.int64), "first": z["first"]}
    fp = meta.pop("fingerprint")
    ctx = meta.pop("ctx")
    return _assemble(fp, tokens, ctx, valid, codes, summaries, strings, meta, words, parts)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def atlas_fingerprint(profile_name: str, hook_name: str, sae_fingerprint: str) -> str:
    """What an atlas depends on: the profile, the hook and the SAE weights."""
    return f"{profile_name}|{hook_name}|{sae_fingerprint}"


def default_atlas_dir(profile, root: Path | None = None) -> Path:
    """Where a profile's atlas lives: `root/<profile>` when given; else shipped `data/atlas/<profile>` for the
    embedded (GGUF) profile and `data/cache/atlas/<profile>` for the others."""
    from app.engine.profiles import DATA_DIR

    if root is not None:
        return Path(root) / profile.name
    return DATA_DIR / "atlas" / profile.name if profile.loader == "gguf" else DATA_DIR / "cache" / "atlas" / profile.name


def build_command(profile_name: str) -> str:
    return f"python -m app atlas --profile {profile_name}"


def load_for_engine(folder: Path, fingerprint: str, profile_name: str) -> tuple[Atlas | None, str]:
    """(atlas, status): status is "ok", or says why there is none and the command that builds it."""
    meta = read_meta(folder)
    cmd = build_command(profile_name)
    if meta is None:
        return None, f"missing: no atlas in {folder}; build it with `{cmd}`"
    if meta.get("fingerprint") != fingerprint or meta.get("version") != ATLAS_VERSION:
        return None, (f"stale: the atlas in {folder} was built for {meta.get('fingerprint')} (version "
                      f"{meta.get('version')}), the loaded SAEs are {fingerprint}; rebuild it with `{cmd}`")
    try:
        return load_atlas(folder), "ok"
    except Exception as exc:  # a half-copied or corrupted folder must not stop the server
        return None, f"unreadable: {type(exc).__name__}: {exc}; rebuild it with `{cmd}`"
