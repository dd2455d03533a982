"""The Engine: one model + coarse/fine SAE pair + the lock that serialises all work on them."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass, field

import torch

from app.engine.analysis import ResidualCache
from app.engine.continuous import ContinuousBatcher, GenJob
from app.engine.loading import load_model, load_sae, validate_pair, with_neuronpedia_ids
from app.engine.map_cache import MapCache
from app.engine.profiles import Profile, get_profile
from app.engine.prompts import template_system
from app.engine.tokens import REPLACEMENT, token_text

SAE_NAMES = ("coarse", "fine")


class EngineBusy(RuntimeError):
    """The work queue is full (or the wait for the model timed out): answer 503 + Retry-After."""

    def __init__(self, retry_after: int = 2):
        super().__init__(f"the model is busy; retry in {retry_after}s")
        self.retry_after = retry_after


class ShuttingDown(EngineBusy):
    """The server is stopping (SIGTERM): no new work on the model; 503 + Retry-After, so the client tries again on
    another replica or on this one once it is back."""

    def __init__(self, retry_after: int = 5):
        RuntimeError.__init__(self, f"the server is shutting down; retry in {retry_after}s (another replica, or this "
                                    "one once it is back)")
        self.retry_after = retry_after


def weights_fingerprint(*modules) -> str:
    """sha256 over parameter bytes of a few rows of each tensor (cheap, stable across loads)."""
    h = hashlib.sha256()
    for mod in modules:
        for name, p in sorted(mod.state_dict().items()):
            t = p.detach().float().cpu().flatten()
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(t[:: max(1, t.numel() // 4096)].numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Engine:
    """Everything heavy, built once in the app's lifespan; routes reach it through a dependency."""

    profile: Profile
    model: object  # HookedTransformer
    tokenizer: object
    saes: dict  # {"coarse": SAE, "fine": SAE}
    chat_template: str | None = None
    device: str = "cpu"
    load_seconds: float = 0.0
    max_waiting: int = 8
    wait_timeout_s: float = 30.0
    fingerprint: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _waiting: int = 0
    _waiting_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _owner: int | None = field(default=None, repr=False)
    atlas: object = field(default=None, repr=False)  # atlas.Atlas for these SAEs, or None (see atlas_status)
    atlas_status: str = "not loaded"  # "ok" or why there is none (missing / stale / unreadable) + the build command
    atlas_dir: object = None  # Path of the profile's atlas folder
    pair_check: object = None  # atlas.PairIndependence of the coarse/fine pair (same-index decoder cosines)
    tuned_lens: object = field(default=None, repr=False)  # tuned_lens.TunedLens, or None (see tuned_lens_status)
    tuned_lens_status: str = "not loaded"  # "ok" or why there is none (folders looked in) + how to get one
    # every-layer residuals of recently analysed prompts, for the follow-up logit lens (analysis.ResidualCache)
    resid_cache: ResidualCache = field(default_factory=ResidualCache, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)  # set by stop(): no new sessions
    map_cache: MapCache = field(default_factory=MapCache, repr=False)  # the map's layout, hover table, base figures
    batching: bool = True  # generation rows of concurrent requests share one decode (continuous.ContinuousBatcher)
    _batcher: ContinuousBatcher | None = field(default=None, repr=False)

    @classmethod
    def build(cls, profile: str | Profile, device: str | None = None, atlas_root=None, lens_root=None,
              **kw) -> "Engine":
        """Load a profile's model and both SAEs (raises loading.ProfileUnavailable with one clear line).

        atlas_root: folder holding `<profile>/` atlases (default: data/atlas or data/cache/atlas, see atlas.py).
        lens_root: folder holding `<profile>/` tuned lenses (default data/lens; then the HF cache, see tuned_lens.py).
        """
        profile = get_profile(profile) if isinstance(profile, str) else profile
        profile = with_neuronpedia_ids(profile)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        t0 = time.perf_counter()
        lm = load_model(profile, device)
        saes = {}
        for spec in (profile.coarse, profile.fine):
            sae = load_sae(spec, profile, device)
            if sae.W_dec.dtype != torch.float32 and device == "cpu":
                sae = sae.to(dtype=torch.float32)
            sae.eval()
            saes[spec.name] = sae
        validate_pair(profile, lm.model, saes)
        eng = cls(profile, lm.model, lm.tokenizer, saes, lm.chat_template, device, time.perf_counter() - t0, **kw)
        eng.fingerprint = weights_fingerprint(*saes.values())
        eng.load_atlas(atlas_root)
        eng.load_tuned_lens(lens_root)
        if "coarse" in saes and "fine" in saes:
            from app.engine.atlas import pair_independence

            eng.pair_check = pair_independence(saes["coarse"].W_dec, saes["fine"].W_dec)
        return eng

    def load_atlas(self, atlas_root=None) -> None:
        """(Re)load the profile's atlas; sets atlas (None when missing or stale) and atlas_status."""
        from app.engine import atlas as at

        self.atlas_dir = at.default_atlas_dir(self.profile, atlas_root)
        fp = at.atlas_fingerprint(self.profile.name, self.hook_name, self.fingerprint)
        self.atlas, self.atlas_status = at.load_for_engine(self.atlas_dir, fp, self.profile.name)
        if self.atlas is not None and self.tokenizer is not None:
            # atlases built before app.engine.tokens stored byte tokens as "\ufffd": show their bytes instead
            strings = {i: token_text(self.tokenizer, i) if REPLACEMENT in s else s
                       for i, s in self.atlas.token_strings.items()}
            self.atlas = dataclasses.replace(self.atlas, token_strings=strings)

    def template_system(self):
        """What the chat template does with the system prompt (prompts.template_system: its default, whether a true
        none is possible), rendered once; the forms offer "none" from it."""
        if "_template_system" not in self.__dict__:
            self.__dict__["_template_system"] = template_system(self.tokenizer) if self.tokenizer is not None else None
        return self.__dict__["_template_system"]

    def load_tuned_lens(self, root=None) -> None:
        """(Re)load the profile's tuned lens; sets tuned_lens (None when there is none) and tuned_lens_status."""
        from app.engine.tuned_lens import find_tuned_lens

        cfg = self.model.cfg  # type: ignore[attr-defined]
        self.tuned_lens, self.tuned_lens_status = find_tuned_lens(self.profile, cfg.n_layers, cfg.d_model, root)

    @property
    def hook_name(self) -> str:
        return self.profile.hook_name

    @contextlib.contextmanager
    def session(self, timeout: float | None = None):
        """Exclusive use of model + SAEs; bounded queue (EngineBusy when full); hooks always cleared after.

        Whatever happens inside (an exception in a hook or the SAE, out of memory, a generator closed because the
        client left), on exit no hook stays attached and the lock is free. Not reentrant: a nested session() in
        the same thread raises at once instead of deadlocking until the timeout.
        """
        if self._owner == threading.get_ident():
            raise RuntimeError("engine.session() is not reentrant (already held by this thread)")
        if self._stopping.is_set():
            raise ShuttingDown()
        with self._waiting_lock:
            if self._waiting >= self.max_waiting:
                raise EngineBusy()
            self._waiting += 1
        try:
            got = self._lock.acquire(timeout=self.wait_timeout_s if timeout is None else timeout)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        if not got:
            raise EngineBusy()
        if self._stopping.is_set():  # stopped while this request waited for the model
            self._lock.release()
            raise ShuttingDown()
        self._owner = threading.get_ident()
        failed = False
        try:
            with torch.inference_mode():
                yield self
        except BaseException:
            failed = True
            raise
        finally:
            try:
                # Hooks are only attached through model.hooks(...) contexts; this is the safety net.
                self._clear_hooks()
                if failed and self.device.startswith("cuda"):
                    torch.cuda.empty_cache()  # after an OOM, give the cached blocks back before the next request
            finally:
                self._owner = None
                self._lock.release()

    def _clear_hooks(self) -> None:
        for mod in (self.model, *self.saes.values()):
            reset = getattr(mod, "reset_hooks", None)
            if reset is not None:
                try:
                    reset(including_permanent=False)
                except Exception:  # one failing module must not keep hooks on the others
                    pass

    def attached_hooks(self) -> int:
        """Torch hooks (forward, pre-forward, backward) on any submodule of the model and the SAEs (0 when idle)."""
        n = 0
        for mod in (self.model, *self.saes.values()):
            for m in mod.modules():
                n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        return n

    @contextlib.contextmanager
    def background_session(self, patience_s: float = 600.0, cancel: threading.Event | None = None):
        """session() for long jobs: waits out a full queue (EngineBusy) with backoff instead of failing.

        Interactive requests keep the bounded queue and its 503s; a background batch just waits its turn.
        """
        deadline, delay = time.monotonic() + patience_s, 0.05
        while True:
            stack = contextlib.ExitStack()
            try:
                stack.enter_context(self.session())
                break
            except ShuttingDown:
                raise
            except EngineBusy:
                if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)
        with stack:
            yield self

    def stop(self) -> None:
        """The process is stopping: every later session() raises ShuttingDown, so long work made of many sessions
        (an experiment, a discovery run, a re-run) ends at its next chunk instead of holding the exit."""
        self._stopping.set()

    def generate_rows(self, jobs: list[GenJob]) -> list[GenJob]:
        """Run a request's generation rows, batched with concurrent requests' rows; -> the jobs, filled."""
        with self._waiting_lock:
            if self._batcher is None:
                self._batcher = ContinuousBatcher(self, busy=EngineBusy)
        return self._batcher.generate(jobs) if self.batching else self._batcher._unbatched(jobs)

    @property
    def busy(self) -> bool:
        return self._lock.locked()
