"""app.training.saes end to end on the tiny profile (seconds), and the shipped SAEs' quality bars."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from app.engine.profiles import DATA_DIR, get_profile
from app.training import saes as S

WORDS = ("the cat sat on a mat while France and Paris rain cold river code python function bread "
         "red blue green seven eight nine apple tree stone").split()


def synthetic_windows(tokenizer, n_windows: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    stream: list[int] = []
    while len(stream) < n_windows * S.CTX:
        sent = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + ". "
        stream += tokenizer.encode(sent, add_special_tokens=False)
    return [stream[i * S.CTX:(i + 1) * S.CTX] for i in range(n_windows)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from app.engine.loading import load_model

    lm = load_model(get_profile("tiny"))
    root = tmp_path_factory.mktemp("train")
    windows = synthetic_windows(lm.tokenizer, 60)
    chat = (synthetic_windows(lm.tokenizer, 10, seed=5), synthetic_windows(lm.tokenizer, 2, seed=6))
    res = S.run("tiny", ["corpus", "collect", "coarse", "fine", "eval"], work=root / "work", out_root=root / "saes",
                model=lm.model, tokenizer=lm.tokenizer, quiet=True, windows=windows, chat=chat)
    return res, root, lm, windows, chat


def test_run_writes_loadable_saes(tiny_run):
    from sae_lens import SAE, TopKSAE

    res, root, lm, *_ = tiny_run
    assert set(res) == {"coarse", "fine"}
    for name, (d_sae, k, *_rest) in S.PLANS["tiny"].items():
        sae = SAE.load_from_disk(str(root / "saes" / name))
        assert isinstance(sae, TopKSAE)
        assert sae.cfg.d_sae == d_sae and sae.cfg.k == k and sae.cfg.d_in == lm.model.cfg.d_model
        assert sae.cfg.metadata.hook_name == get_profile("tiny").hook_name
        assert sae.W_dec.dtype == torch.float16  # saved in fp16
        m = json.loads((root / "saes" / name / "metrics.json").read_text())
        # the plan's tokens, capped at two passes over the collected activations
        assert m["tokens_trained"] >= min(S.PLANS["tiny"][name][3], S.MAX_EPOCHS * m["train_activations"]) - 256
        assert m["tokens_trained"] <= S.MAX_EPOCHS * m["train_activations"]
        assert m["corpus_sha256"] == json.loads((root / "saes" / "corpus.json").read_text())["sha256"]


def test_metrics_match_independent_numpy(tiny_run):
    """explained variance, L0 and dead fraction recomputed in numpy from the saved weights and held-out acts."""

    res, root, *_ = tiny_run
    for held_file, key, n_windows in (("acts_heldout.npy", "corpus", 60 // S.HELDOUT_DIVISOR), ("acts_heldout_chat.npy", "chat", 2)):
        held = np.load(root / "work" / held_file).astype(np.float64)
        assert held.shape[0] == n_windows * (S.CTX - 1)  # position 0 of every window left out
        _check_metrics(res, root, held, key)


def _check_metrics(res, root, held, key):
    from safetensors.numpy import load_file

    for name in ("coarse", "fine"):
        w = {k: v.astype(np.float64) for k, v in load_file(root / "saes" / name / "sae_weights.safetensors").items()}
        k = S.PLANS["tiny"][name][1]
        pre = (held - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        thresh = -np.sort(-pre, axis=1)[:, k - 1: k]
        acts = np.where(pre >= thresh, np.maximum(pre, 0), 0.0)
        x_hat = acts @ w["W_dec"] + w["b_dec"]
        ev = 1 - ((held - x_hat) ** 2).sum() / ((held - held.mean(0)) ** 2).sum()
        m = res[name]["eval_sets"][key]
        assert m["explained_variance"] == pytest.approx(ev, abs=2e-3)
        assert m["mean_l0"] == pytest.approx((acts > 0).sum(1).mean(), abs=1e-6)
        assert m["dead_fraction"] == pytest.approx(1 - (acts > 0).any(0).mean(), abs=1e-6)
        assert m["explained_variance"] > 0.5  # the tiny SAEs learn something in 20k tokens


def test_ce_loss_recovered_matches_hooked_forward(tiny_run):
    """CE with the SAE spliced at positions >= 1, recomputed with a hook and torch cross_entropy."""
    from sae_lens import SAE

    res, root, lm, *_ = tiny_run
    model, hook = lm.model, get_profile("tiny").hook_name
    heldout = json.loads((root / "work" / "windows.json").read_text())["heldout"]
    toks = torch.tensor(heldout)
    train = np.concatenate([np.load(root / "work" / f).astype(np.float32) for f in ("acts_train.npy", "acts_train_chat.npy")])
    mean_act = torch.from_numpy(train[:200_000].mean(0))
    sae = SAE.load_from_disk(str(root / "saes" / "fine"), dtype="float32")

    def make_replace_hook(fn):
        def hook_fn(resid, hook):
            out = resid.clone()
            out[:, 1:] = fn(resid[:, 1:])
            return out
        return hook_fn

    def ce(fwd_hooks):
        with torch.inference_mode(), model.hooks(fwd_hooks=fwd_hooks):
            logits = model(toks)
        return torch.nn.functional.cross_entropy(logits[:, 1:-1].reshape(-1, logits.shape[-1]).float(),
                                                 toks[:, 2:].reshape(-1)).item()

    clean = ce([])
    ablated = ce([(hook, make_replace_hook(lambda r: mean_act.expand_as(r)))])
    spliced = ce([(hook, make_replace_hook(lambda r: sae.decode(sae.encode(r))))])
    m = res["fine"]
    assert m["ce_clean"] == pytest.approx(clean, abs=1e-4)
    assert m["ce_mean_ablation"] == pytest.approx(ablated, abs=1e-4)
    assert m["ce_with_sae"] == pytest.approx(spliced, abs=1e-4)
    assert m["ce_loss_recovered"] == pytest.approx((ablated - spliced) / (ablated - clean), abs=1e-3)


def test_given_windows_are_split_and_recorded(tiny_run):
    res, root, _, windows, chat = tiny_run
    w = json.loads((root / "work" / "windows.json").read_text())
    n_held = 60 // S.HELDOUT_DIVISOR
    assert len(w["heldout"]) == n_held and len(w["train"]) == 60 - n_held and w["train_chat"] == chat[0]
    assert w["heldout_chat"] == chat[1] and w["heldout_chat_slice"] == []
    assert sorted(map(tuple, w["train"] + w["heldout"])) == sorted(map(tuple, windows))
    rec = json.loads((root / "saes" / "corpus.json").read_text())
    assert rec["tokens"] == 60 * S.CTX and rec["windows"] == 72 and rec["train_tokens"] == (70 - n_held) * S.CTX
    assert rec["chat"]["train_windows"] == 10 and rec["chat"]["eval_windows"] == 2
    for name in ("coarse", "fine"):
        sets = res[name]["eval_sets"]
        assert set(sets) == {"corpus", "chat"} and sets["chat"]["eval_tokens"] == 2 * (S.CTX - 1)
        assert res[name]["explained_variance"] == sets["corpus"]["explained_variance"]
        assert sets["chat"]["ce_tokens"] == 2 * (S.CTX - 2)


def test_shipped_saes_follow_the_plan():
    """The shipped SAEs' metrics and cfg.json agree with the plan in saes.PLANS (width, k, passes over the data)."""
    for name in ("coarse", "fine"):
        d_sae, k, lr, passes = S.PLANS["smollm2-135m"][name]
        m = json.loads((SHIPPED / name / "metrics.json").read_text())
        cfg = json.loads((SHIPPED / name / "cfg.json").read_text())
        assert (m["d_sae"], m["k"], cfg["d_sae"], cfg["k"]) == (d_sae, k, d_sae, k)
        assert isinstance(passes, float) and passes <= S.MAX_EPOCHS
        # whole batches of 2,048; never more than two passes over any activation
        assert passes * m["train_activations"] - 2048 <= m["tokens_trained"] <= S.MAX_EPOCHS * m["train_activations"]
        assert m["train_activations"] >= 5_000_000  # distinct training tokens
        assert m["corpus_sha256"] == json.loads((SHIPPED / "corpus.json").read_text())["sha256"]
    assert S.PLANS["smollm2-135m"]["fine"][0] >= 8 * S.PLANS["smollm2-135m"]["coarse"][0]


def test_shipped_corpus_record():
    """Sources with licences, token counts and sha256; the held-out slice is disjoint from training by construction."""
    rec = json.loads((SHIPPED / "corpus.json").read_text())
    assert len(rec["sources"]) >= 5
    for src in rec["sources"]:
        assert src["licence"] and src["tokens"] > 0 and len(src["sha256"]) == 64
    assert sum(src["tokens"] for src in rec["sources"]) == rec["tokens"]
    held = rec["heldout_windows"] + rec["heldout_chat_windows"] + rec["heldout_chat_slice_windows"]
    assert rec["train_windows"] + held == rec["windows"]
    assert rec["train_windows"] * (rec["context"] - 1) >= 6_000_000  # distinct training tokens (issue 24)
    chat = rec["chat"]["manifest"]["splits"]
    assert sum(s["tokens"] for s in chat.values()) >= 1_000_000  # chat transcripts
    assert rec["chat"]["train_windows"] > 0 and rec["heldout_chat_windows"] == rec["chat"]["eval_windows"] > 0


SHIPPED = DATA_DIR / "saes" / "smollm2-135m"
BARS = {"coarse": {"explained_variance": 0.80, "ce_loss_recovered": 0.95, "dead_fraction": 0.01},
        "fine": {"explained_variance": 0.85, "ce_loss_recovered": 0.97, "dead_fraction": 0.01}}


@pytest.mark.parametrize("name", ["coarse", "fine"])
def test_shipped_sae_quality_bars(name):
    """Issue 24's bars on both held-out sets (the corpus slice and the chat transcripts), each."""
    path = SHIPPED / name / "metrics.json"
    m = json.loads(path.read_text())
    assert set(m["eval_sets"]) == {"corpus", "chat"}
    for set_name, q in m["eval_sets"].items():
        assert q["explained_variance"] >= BARS[name]["explained_variance"], (set_name, q["explained_variance"])
        assert q["ce_loss_recovered"] >= BARS[name]["ce_loss_recovered"], (set_name, q["ce_loss_recovered"])
        assert q["dead_fraction"] <= BARS[name]["dead_fraction"], (set_name, q["dead_fraction"])
        assert q["mean_l0"] <= 64, (set_name, q["mean_l0"])
    assert m["hook_name"] == "blocks.14.hook_resid_post"


def test_shipped_weights_fp16_within_budget():
    total = sum((SHIPPED / n / "sae_weights.safetensors").stat().st_size for n in ("coarse", "fine"))
    assert total <= 60 * 2**20, total


def test_shipped_pair_is_independent():
    """Distinct initialisation: same-index decoder cosine ~0 and the best fine match is rarely the same index."""
    from safetensors.numpy import load_file

    dec = {n: load_file(SHIPPED / n / "sae_weights.safetensors")["W_dec"].astype(np.float64) for n in ("coarse", "fine")}
    c = dec["coarse"] / np.linalg.norm(dec["coarse"], axis=1, keepdims=True)
    f = dec["fine"] / np.linalg.norm(dec["fine"], axis=1, keepdims=True)
    n = c.shape[0]
    same = (c * f[:n]).sum(1)
    assert abs(same.mean()) <= 0.05, same.mean()
    best = np.argmax(c @ f.T, axis=1)
    assert (best == np.arange(n)).mean() <= 0.01


def test_chat_windows_hold_out_whole_topics_of_the_train_split(tmp_path):
    """The held-out slice is the train-split transcripts whose slot is in chat_turns' held-out share: none of its
    topics is trained on, and train + slice is every train transcript."""
    import gzip

    from app.training.chat_turns import EVAL_SHARE, HELDOUT_SHARE, build_user_turns, slot_hash
    from tests.training.test_chat import POOLS

    turns = build_user_turns(400, seed=2, pools=POOLS)
    rows = []
    for i, t in enumerate(turns):
        ids = [1000 + i] * 64  # one marker id per transcript: two per window after packing
        rows.append({"turn_id": t.id, "split": t.split, "kind": t.kind, "source": t.source, "system": t.system,
                     "user": t.user, "reply": "r", "ids": ids, "n_prompt": 4, "finish": "stop", "temperature": 0.0,
                     "top_p": 1.0, "seed": 0})
    for split in ("train", "eval"):
        with gzip.open(tmp_path / f"{split}-0000.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows if r["split"] == split))
    (tmp_path / "manifest.json").write_text(json.dumps({"turns": len(turns)}))
    train, ev, sl, rec = S.chat_windows("tiny", folder=tmp_path, turns=turns)

    def slots(wins):
        return {turns[tok - 1000].slot.lower() for win in wins for tok in win}

    h = {t.slot.lower(): slot_hash(t.slot) for t in turns}
    assert sl and train and ev and not slots(sl) & slots(train) and not slots(ev) & slots(train)
    assert all(EVAL_SHARE <= h[s] < EVAL_SHARE + HELDOUT_SHARE for s in slots(sl))
    assert all(h[s] >= EVAL_SHARE + HELDOUT_SHARE for s in slots(train)) and all(h[s] < EVAL_SHARE for s in slots(ev))
    n_train = sum(t.split == "train" for t in turns)
    assert len(train) + len(sl) in (n_train // 2, n_train // 2 - 1)  # two transcripts per window; a ragged end each
    assert rec["heldout_slice_transcripts"] == sum(EVAL_SHARE <= h[t.slot.lower()] < EVAL_SHARE + HELDOUT_SHARE
                                                   for t in turns)
