"""`python -m app map --profile P`: build the activation-space map (layout.npz) beside the profile's atlas.

Needs only the two SAEs (no model): UMAP (cosine) of every decoder row of both SAEs, HDBSCAN regions labelled by
the atlas's token labels when an atlas for the same SAEs is in the folder ("cluster N" otherwise), and the
neighbour-preservation figure. Deterministic for --seed. `make atlas` runs it after the atlas.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("map", help="build the 2D map of both SAEs' features (layout.npz in the atlas folder)")
    p.add_argument("--profile", default="smollm2-135m")
    p.add_argument("--out", default=None, help="folder (default: the profile's atlas folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-dist", type=float, default=0.1)
    p.add_argument("--n-epochs", type=int, default=None, help="UMAP epochs (default: UMAP's, 200 above 10k points)")
    p.add_argument("--names-only", action="store_true",
                   help="keep the stored map (positions, regions' shapes) and only name its regions again from the atlas")


def load_decoders(profile_name: str) -> tuple[dict, str, object]:
    """({sae -> W_dec numpy [d_sae, d_model]}, the engine's SAE weights fingerprint, profile) without the model."""
    import torch

    from app.engine.engine import weights_fingerprint
    from app.engine.loading import load_sae
    from app.engine.profiles import get_profile

    profile = get_profile(profile_name)
    saes = {}
    for spec in (profile.coarse, profile.fine):
        sae = load_sae(spec, profile, "cpu")
        if sae.W_dec.dtype != torch.float32:  # as Engine.build does on CPU: same fingerprint
            sae = sae.to(dtype=torch.float32)
        saes[spec.name] = sae
    fp = weights_fingerprint(*saes.values())
    return {n: s.W_dec.detach().float().numpy() for n, s in saes.items()}, fp, profile


def map_fingerprint(profile, sae_fingerprint: str) -> str:
    """What a layout depends on: the same key as the atlas's (profile, hook, SAE weights)."""
    from app.engine.atlas import atlas_fingerprint

    return atlas_fingerprint(profile.name, profile.hook_name, sae_fingerprint)


def build(profile_name: str, out: Path | None = None, atlas_root=None, seed: int = 0, n_neighbors: int = 15,
          min_dist: float = 0.1, n_epochs: int | None = None, log=print):
    """Build and save the layout; -> (layout, folder)."""
    from app.engine import atlas as at
    from app.engine.layout import build_layout, save_layout

    t0 = time.perf_counter()
    decs, sae_fp, profile = load_decoders(profile_name)
    fp = map_fingerprint(profile, sae_fp)
    folder = Path(out) if out else at.default_atlas_dir(profile, atlas_root)
    atlas, status = at.load_for_engine(folder, fp, profile.name)
    log(f"{profile.name}: {' + '.join(f'{n} {d.shape[0]}' for n, d in decs.items())} features; "
        f"region labels from the atlas: {'yes' if atlas is not None else 'no (' + status.split(':')[0] + ')'}")
    lay = build_layout(decs, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, n_epochs=n_epochs,
                       label_fn=atlas.label if atlas is not None else None, fingerprint=fp)
    path = save_layout(folder, lay)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {len(lay.regions)} regions, "
        f"{(lay.cluster >= 0).mean():.0%} of features in one, neighbour preservation@10 {lay.preservation:.3f}; "
        f"layout {lay.seconds:.0f}s, total {time.perf_counter() - t0:.0f}s")
    return lay, folder


def rename(profile_name: str, out: Path | None = None, atlas_root=None, log=print):
    """Name the stored layout's regions again (the naming rule changed; UMAP is not rerun, so nothing moves)."""
    from app.engine import atlas as at
    from app.engine.layout import load_layout, rename_regions, save_layout
    from app.engine.profiles import get_profile

    profile = get_profile(profile_name)
    folder = Path(out) if out else at.default_atlas_dir(profile, atlas_root)
    lay = load_layout(folder)
    if lay is None:
        raise FileNotFoundError(f"no map in {folder}; build it with `python -m app map --profile {profile_name}`")
    atlas, status = at.load_for_engine(folder, lay.fingerprint, profile.name)
    if atlas is None:
        raise FileNotFoundError(f"no atlas for this map in {folder} ({status})")
    new = rename_regions(lay, atlas.label)
    path = save_layout(folder, new)
    log(f"wrote {path}: {len(new.regions)} regions named again")
    return new, folder


def run(args) -> int:
    from app.core.settings import Settings
    from app.engine.loading import ProfileUnavailable

    try:
        if getattr(args, "names_only", False):
            rename(args.profile, args.out, getattr(Settings(profile=args.profile), "atlas_root", None))
            return 0
        build(args.profile, args.out, getattr(Settings(profile=args.profile), "atlas_root", None), args.seed,
              args.n_neighbors, args.min_dist, args.n_epochs)
    except (ProfileUnavailable, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m app.cli.map")
    add_parser(ap.add_subparsers(dest="cmd", required=True))
    sys.exit(run(ap.parse_args()))
