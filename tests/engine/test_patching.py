"""Activation patching and attention heads against independent computations on a tiny random HF Llama saved with
save_pretrained: every patched cell against a forward(-pre)-hook patch on the HF modules themselves, attention
patterns against HF's output_attentions (eager), head DLA against HF's o_proj inputs, head scores against numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import heads as H
from app.engine import patching as P
from app.engine.loading import load_model
from app.engine.profiles import Profile, SAESpec
from app.engine.random_models import random_hf_model
from app.engine.tiny import byte_tokenizer
from tests.patching_reference import hf_logits, hf_patch_grid

HOOK = "blocks.1.hook_resid_post"
CLEAN = list(b"The cat sat on")
CORRUPT = list(b"The dog sat on")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    hf = random_hf_model("llama", n_layers=3)
    with torch.no_grad():  # sharper attention and louder blocks than the stock random model, so every site matters
        for layer in hf.model.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                lin.weight.mul_(6.0)
            for lin in (layer.self_attn.o_proj, layer.mlp.down_proj):
                lin.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp("llama") / "model"
    hf.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    prof = Profile(name="llama", display="llama", loader="hf_dir", hook_layer=1, coarse=SAESpec("coarse", "c"),
                   fine=SAESpec("fine", "f"), model_name=str(folder), hook=HOOK)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    return load_model(prof).model, ref


@pytest.fixture(scope="module")
def answer(models):
    """The answer/wrong pair whose logits move most between clean and corrupt (HF forward)."""
    _, ref = models
    d = hf_logits(ref, CLEAN) - hf_logits(ref, CORRUPT)
    return int(d.argmax()), int(d.argmin())


@pytest.mark.parametrize("site", list(P.SITES))
def test_exact_grid_matches_hf_hook_patch(models, answer, site):
    model, ref = models
    a, w = answer
    with torch.inference_mode():
        g = P.exact_patching(model, CLEAN, CORRUPT, a, w, site, batch_rows=5)  # chunks straddle layers
    lc, lk = float(hf_logits(ref, CLEAN)[a] - hf_logits(ref, CLEAN)[w]), float(
        hf_logits(ref, CORRUPT)[a] - hf_logits(ref, CORRUPT)[w])
    assert g.ld_clean == pytest.approx(lc, abs=1e-4) and g.ld_corrupt == pytest.approx(lk, abs=1e-4)
    assert abs(lc - lk) > 0.2
    want, _, _ = hf_patch_grid(ref, CLEAN, CORRUPT, site, range(3), a, w)
    np.testing.assert_allclose(np.array(g.patched), want, atol=1e-4)
    np.testing.assert_allclose(np.array(g.grid), (want - lk) / (lc - lk), atol=1e-4)
    # batched, never one forward per cell: one per position at most (5 rows hold a position's 3 layers), none for the
    # positions before the first changed token (there clean is corrupt), and each runs positions p.. only
    d = next(i for i, (c, k) in enumerate(zip(CLEAN, CORRUPT)) if c != k)
    assert g.runs == 3 * len(CLEAN) and 0 < g.batches <= len(CLEAN) - d
    assert g.work <= sum(3 * (len(CLEAN) - p) * 3 for p in range(d, len(CLEAN))) < 3 * len(CLEAN) * len(CLEAN) * 3
    assert np.ptp(want) > 0.05  # the site matters in this model: the comparison can fail
    if site == "resid_pre":  # layer 0's input is the embedding: patching a position whose token is the same does nothing
        same = [i for i, (c, k) in enumerate(zip(CLEAN, CORRUPT)) if c == k]
        np.testing.assert_allclose(np.array(g.grid)[0, same], 0.0, atol=1e-6)
        assert np.abs(np.array(g.grid)[0]).max() > 0.05


def test_whole_prompt_fallback_matches_hf_hook_patch(models, answer, monkeypatch):
    """Models whose attention cannot take the corrupt prefix (local windows, QK norm) run whole-prompt rows."""
    model, ref = models
    a, w = answer
    monkeypatch.setattr(P, "supports_prefix", lambda m: False)
    with torch.inference_mode():
        g = P.exact_patching(model, CLEAN, CORRUPT, a, w, "attn_out", batch_rows=5)
    want, _, _ = hf_patch_grid(ref, CLEAN, CORRUPT, "attn_out", range(3), a, w)
    np.testing.assert_allclose(np.array(g.patched), want, atol=1e-4)
    assert g.batches == -(-3 * len(CLEAN) // 5) and g.work == sum(
        min(5, 3 * len(CLEAN) - lo) * len(CLEAN) * (3 - lo // len(CLEAN)) for lo in range(0, 3 * len(CLEAN), 5))


def test_attribution_patching_is_the_first_order_term(models, answer):
    """Against a finite difference of the same hook patch: LD(corrupt + ε·(clean − corrupt) at one cell)."""
    model, _ = models
    a, w = answer
    with torch.inference_mode():
        at = P.attribution_patching(model, CLEAN, CORRUPT, a, w, "resid_pre")
        ex = P.exact_patching(model, CLEAN, CORRUPT, a, w, "resid_pre")
        clean, _ = P.cached_run(model, CLEAN, ["blocks.2.hook_resid_pre"])
        corrupt, _ = P.cached_run(model, CORRUPT, ["blocks.2.hook_resid_pre"])
        eps, p = 1e-3, len(CLEAN) - 2
        src = corrupt["blocks.2.hook_resid_pre"] + eps * (clean["blocks.2.hook_resid_pre"] - corrupt["blocks.2.hook_resid_pre"])
        toks = torch.tensor([CORRUPT])
        with model.hooks(fwd_hooks=[("blocks.2.hook_resid_pre", P.make_patch_rows_hook(src, [0], [p]))]):
            resid = model(toks, stop_at_layer=3)
        fd = (float(P.logit_diff(model, resid, a, w)[0]) - ex.ld_corrupt) / eps
    assert at.patched[2][p] - at.ld_corrupt == pytest.approx(fd, rel=2e-2, abs=1e-3)
    assert at.ld_clean == pytest.approx(ex.ld_clean, abs=1e-5)
    r = P.correlation(at.grid, ex.grid)
    assert r == pytest.approx(np.corrcoef(np.ravel(at.grid), np.ravel(ex.grid))[0, 1])


def test_feature_patching_matches_a_manual_patch(models, answer):
    from tests.engine.test_decoders import random_sae

    model, ref = models
    a, w = answer
    sae = random_sae(model.cfg.d_model, 48, 4, 1)
    with torch.inference_mode():
        rows = P.feature_patching(model, {"coarse": sae}, HOOK, CLEAN, CORRUPT, a, w, candidates=6, top=6)
        assert 0 < len(rows) <= 6
        top = rows[0]
        clean, _ = P.cached_run(model, CLEAN, [HOOK])
        corrupt, _ = P.cached_run(model, CORRUPT, [HOOK])
        W = sae.W_dec[top.index]
        d = (sae.encode(clean[HOOK]) - sae.encode(corrupt[HOOK]))[:, top.index]
        d[0] = 0.0
        np.testing.assert_allclose(top.delta, d.numpy(), atol=1e-5)
    # independent: the same residual edit on the HF model (output of decoder layer 1 = hook_resid_post of block 1)
    def add(m, args, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h + (d[:, None] * W[None])[None]
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    lg = hf_logits(ref, CORRUPT, [lambda: ref.model.layers[1].register_forward_hook(add)])
    lc, lk = [float(x[a] - x[w]) for x in (hf_logits(ref, CLEAN), hf_logits(ref, CORRUPT))]
    assert top.effect == pytest.approx((float(lg[a] - lg[w]) - lk) / (lc - lk), abs=1e-4)
    assert [abs(r.effect) for r in rows] == sorted((abs(r.effect) for r in rows), reverse=True)


def test_input_checks_name_the_field_and_the_token():
    tok = byte_tokenizer()
    assert tok.decode([P.single_token(tok, "a", "answer")]) == "a"
    with pytest.raises(P.PatchingInputError) as e:
        P.single_token(tok, " Rome", "wrong")
    assert e.value.field == "wrong" and "5 tokens" in str(e.value) and "' '" in str(e.value)
    with pytest.raises(P.PatchingInputError) as e:
        P.check_same_length(["a", "b"], ["a"])
    assert e.value.field == "corrupt" and "['a', 'b']" in str(e.value) and "['a']" in str(e.value)
    with pytest.raises(P.PatchingInputError, match="site"):
        P.site_hook("resid_mid", 0)
    assert P.sae_grid_layer("blocks.14.hook_resid_post", "resid_pre") == 15
    assert P.sae_grid_layer("blocks.8.hook_resid_pre", "resid_pre") == 8
    assert P.sae_grid_layer("blocks.8.hook_resid_pre", "mlp_out") is None


class _SpaceTok:
    """Two vocabularies' worth of behaviour: 'Paris' one token, ' Paris' another one."""

    vocab = {"Paris": 7, " Paris": 9, " Par": 3, "is": 4}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab[text]] if text in self.vocab else [3, 4]

    def decode(self, ids):
        inv = {v: k for k, v in self.vocab.items()}
        return "".join(inv[i] for i in ids)


def test_missing_leading_space_shows_the_token_it_would_use():
    with pytest.raises(P.PatchingInputError) as e:
        P.single_token(_SpaceTok(), "Paris", "answer")
    assert "'Paris' (id 7)" in str(e.value) and "' Paris' (id 9)" in str(e.value)
    assert P.single_token(_SpaceTok(), " Paris", "answer") == 9


@pytest.mark.parametrize("from_residuals", [False, True])
def test_attention_patterns_and_dla_match_hf(models, from_residuals):
    """Both ways: one forward, and each block's attention alone on the residuals the analysis forward keeps."""
    from app.engine.analysis import lens_residuals

    model, ref = models
    with torch.inference_mode():
        resid = lens_residuals(model, CLEAN) if from_residuals else None
        hp = H.head_patterns(model, CLEAN, target=65, resid=resid)
        full = H.head_patterns(model, CLEAN)
    assert [i for i, _ in hp.top_next] == [i for i, _ in full.top_next]
    np.testing.assert_allclose([p for _, p in hp.top_next], [p for _, p in full.top_next], atol=1e-5)
    with torch.no_grad():
        out = ref(torch.tensor([CLEAN]), output_attentions=True, output_hidden_states=True)
    want = np.stack([a[0].numpy() for a in out.attentions])
    np.testing.assert_allclose(hp.patterns, want, atol=1e-5)
    # DLA from the HF side: the o_proj input split per head, through o_proj's slice, the final RMSNorm's scale and
    # weight, and lm_head's row
    zs, pre = [], []
    hooks = [ref.model.layers[i].self_attn.o_proj.register_forward_pre_hook(lambda m, a: zs.append(a[0][0, -1].clone()))
             for i in range(3)]
    hooks.append(ref.model.norm.register_forward_pre_hook(lambda m, a: pre.append(a[0][0, -1].clone())))
    with torch.no_grad():
        ref(torch.tensor([CLEAN]))
    for h in hooks:
        h.remove()
    last = pre[0].double()  # the final norm's input at the last position
    rms = torch.sqrt((last ** 2).mean() + ref.config.rms_norm_eps)
    nh, dh = ref.config.num_attention_heads, ref.config.hidden_size // ref.config.num_attention_heads
    for i, z in enumerate(zs):
        Wo = ref.model.layers[i].self_attn.o_proj.weight.double()
        for h in range(nh):
            head_out = Wo[:, h * dh:(h + 1) * dh] @ z[h * dh:(h + 1) * dh].double()
            want_dla = float((head_out / rms * ref.model.norm.weight.double()) @ ref.lm_head.weight[65].double())
            assert hp.dla[i, h] == pytest.approx(want_dla, abs=1e-3, rel=1e-4)


def test_head_scores_match_numpy(models):
    model, ref = models
    with torch.inference_mode():
        hs = H.head_scores(model, byte_tokenizer(), seq_len=8, n_seqs=3, seed=1)
    seqs = H.repeated_tokens(model.cfg.d_vocab, 8, 3, 1, None, byte_tokenizer().all_special_ids)
    assert list(seqs[0]) == list(hs.token_ids) and (seqs[:, :8] == seqs[:, 8:]).all()
    with torch.no_grad():
        att = np.stack([np.stack([a[0].numpy() for a in ref(torch.tensor([s]), output_attentions=True).attentions])
                        for s in seqs])  # [b, layer, head, T, T]
    L, T = 8, 16
    for name, (q_of, k_of) in {"previous_token": (range(1, T), lambda q: q - 1),
                               "induction": (range(L, T), lambda q: q - L + 1),
                               "duplicate_token": (range(L, T), lambda q: q - L),
                               "first_position": (range(1, T), lambda q: 0)}.items():
        want = np.mean([[att[b, :, :, q, k_of(q)] for q in q_of] for b in range(3)], axis=(0, 1))
        np.testing.assert_allclose(hs.scores[name], want, atol=1e-5, err_msg=name)
        layer, head, pat = hs.examples[name]
        assert hs.scores[name][layer, head] == hs.scores[name].max()
        np.testing.assert_allclose(pat, att[0, layer, head], atol=1e-5)
