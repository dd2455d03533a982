"""CLI: `python -m app serve --profile smollm2-135m --host 127.0.0.1 --port 8000` (or an ad hoc profile:
`--model NAME_OR_PATH --hook HOOK --coarse RELEASE:ID|PATH --fine RELEASE:ID|PATH`), `python -m app fetch`,
`python -m app profiles`."""
from __future__ import annotations

import argparse
import os
import sys

STOP_TIMEOUT_S = 5  # uvicorn's graceful-shutdown limit (seconds) for requests still open after a stop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app", description="Activation Space Navigator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve the dashboard")
    serve.add_argument("--profile", default=os.environ.get("ASN_PROFILE", "smollm2-135m"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default=None)
    serve.add_argument("--store", default=None, metavar="URL",
                       help="saved explorations and job state: sqlite:///path.db or postgresql://user@host/db "
                            "(default ASN_STORE_URL, else data/explorations.db)")
    serve.add_argument("--auth-token", default=None, metavar="TOKEN",
                       help="require this token on every route but /health (bearer header or sign-in page); "
                            "default ASN_AUTH_TOKEN, else none")
    serve.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                       help="ad hoc profile (no file): transformer-lens name, local HF folder or .gguf file")
    serve.add_argument("--hook", default=None, help="ad hoc profile: hook point, e.g. blocks.8.hook_resid_pre")
    serve.add_argument("--coarse", default=None, metavar="RELEASE:ID|PATH", help="ad hoc profile: coarse SAE")
    serve.add_argument("--fine", default=None, metavar="RELEASE:ID|PATH", help="ad hoc profile: fine (wider) SAE")
    sub.add_parser("profiles", help="list the profiles in profiles/ and what each lacks on this machine")
    fetch = sub.add_parser("fetch", help="fetch and convert a profile's model (idempotent)")
    fetch.add_argument("--profile", default="smollm2-135m")
    from app.cli import atlas as atlas_cli

    atlas_cli.add_parser(sub)
    from app.cli import map as map_cli

    map_cli.add_parser(sub)
    args = ap.parse_args(argv)

    if args.cmd == "atlas":
        return atlas_cli.run(args)

    if args.cmd == "map":
        return map_cli.run(args)

    if args.cmd == "profiles":
        return list_profiles()

    if args.cmd == "fetch":
        from app.engine.availability import is_cached
        from app.engine.profiles import ProfileError, get_profile

        try:
            fetch_profile = get_profile(args.profile)
        except (KeyError, ProfileError) as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
        if is_cached(fetch_profile):  # idempotent: a second `make run` starts in seconds
            print(f"{args.profile}: model and SAEs already cached")
            return 0
        from app.engine.engine import Engine
        from app.engine.loading import ProfileUnavailable

        try:
            eng = Engine.build(fetch_profile, "cpu")
        except ProfileUnavailable as exc:
            return _fail(exc)
        print(f"{args.profile}: model and SAEs ready ({eng.load_seconds:.1f}s, fingerprint {eng.fingerprint})")
        return 0

    from app.core.settings import Settings
    from app.store import StoreError, open_store

    extra = {"store_url": args.store} if args.store else {}
    if args.auth_token:
        extra["auth_token"] = args.auth_token
    try:  # a missing or unreachable store stops the start with one line (before anything heavy is imported)
        open_store(Settings(**extra).store_url).close()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from app.engine.profiles import ProfileError, adhoc_profile, get_profile

    adhoc = [args.model, args.hook, args.coarse, args.fine]
    try:  # a bad profile name / file / ad hoc value: one line
        if any(adhoc):
            if not all(adhoc):
                raise ProfileError("an ad hoc profile needs --model, --hook, --coarse and --fine")
            profile = adhoc_profile(args.model, args.hook, args.coarse, args.fine)
        else:
            profile = get_profile(args.profile)
    except (ProfileError, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    import uvicorn  # the heavy imports only once the profile is known: a bad name fails in a second

    from app.core.process import limit_malloc_arenas

    limit_malloc_arenas()  # before the engine's and the server's threads exist

    from app.engine.engine import Engine
    from app.engine.loading import ProfileUnavailable
    from app.main import create_app

    settings = Settings(profile=profile.name if any(adhoc) else args.profile, host=args.host, port=args.port,
                        device=args.device, **extra)
    try:  # fail before uvicorn starts, with one clear line instead of a traceback
        engine = Engine.build(profile, settings.device, max_waiting=settings.max_waiting,
                              wait_timeout_s=settings.wait_timeout_s, atlas_root=settings.atlas_root)
    except ProfileUnavailable as exc:
        return _fail(exc)
    app = create_app(settings, engine_factory=lambda s: engine)
    print(f"serving {settings.profile} at http://{args.host}:{args.port}")
    # a stop (SIGTERM) interrupts running work at once (app.jobs.stop_signal); whatever still holds a connection after
    # STOP_TIMEOUT_S is cancelled, so the process is gone well within a container's 10 s
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=STOP_TIMEOUT_S)
    return 0


def _fail(exc: Exception) -> int:
    """One line on stderr, exit 2 at once: a failed hub lookup (transformer-lens / huggingface_hub, offline) can
    leave a non-daemon thread behind that would keep the process alive after main() returns."""
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)


def list_profiles() -> int:
    """`python -m app profiles`: every profile file, its model / hook / SAEs, and what is missing here."""
    from app.engine.availability import missing_parts
    from app.engine.profiles import PROFILES_DIR, load_profiles

    for name, p in load_profiles(PROFILES_DIR).items():
        missing = missing_parts(p)
        print(f"{name:16s} {'ready' if not missing else 'missing':8s} {p.model_name} @ {p.hook_name}; "
              f"SAEs {p.coarse.source} / {p.fine.source}")
        for m in missing:
            print(f"{'':25s}needs {m}")
    print(f"(files in {PROFILES_DIR}; ad hoc: python -m app serve --model NAME_OR_PATH --hook HOOK "
          f"--coarse RELEASE:ID|PATH --fine RELEASE:ID|PATH)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
