"""The lens's exactness bar on the real model (issue 29): against the fp32 notebook way (transformer-lens
run_with_cache, accumulated_resid(apply_ln=True), unembed, softmax, top 5), the lens users get (int8 or bf16
unembedding with fp32-rescored candidates, whichever this CPU runs fastest) agrees on the top-1 token in >= 99.9 % of the cells
and every shown probability is within 1e-3; each cell's KL to the model's output (nats, shown to 3 decimals) is within
2e-3 of the notebook's full-log-softmax KL, on the same path (the exact fp32 path itself differs by up to 4e-4:
our forward's final distribution differs from transformer-lens's by float rounding). A control shows the bar bites: plain bf16 rounding
misses it."""
from __future__ import annotations

import pytest
import torch

from app.engine import analysis as an
from app.engine.analysis import unembed
from app.engine.analysis.unembed import pick_precision

pytestmark = pytest.mark.embedded

PROMPTS = [
    "The capital of France is Paris. Paris is the largest city in France and sits on the banks of the Seine. "
    "The Eiffel Tower was built for the 1889 World's Fair, and the Louvre is the most visited museum in the world.",
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n\nprint(fib(10)) # prints 55, the tenth "
    "Fibonacci number, and then",
    "<|im_start|>user\nWhat is the boiling point of water at sea level?<|im_end|>\n<|im_start|>assistant\n"
    "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level.",
]


def notebook(model, ids):
    """fp32, every cell's full softmax: -> (top-5 probabilities [L+1, pos, 5], ids, normalised residuals,
    KL(final || cell) [L+1, pos] in nats, from the full log-softmax in float64)."""
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.tensor([list(ids)]))
        acc = cache.accumulated_resid(apply_ln=True)[:, 0]  # [layers+1, pos, d]
        logits = model.unembed(acc)
        probs = logits.softmax(-1)
        v, i = probs.topk(5, dim=-1)
        logp = logits.double().log_softmax(-1)
        kl = (logp[-1].exp() * (logp[-1] - logp)).sum(-1)
    return v, i, acc, kl.float()


@pytest.fixture(scope="module")
def cells(embedded_engine):
    eng = embedded_engine
    out = []
    for text in PROMPTS:
        ids = eng.tokenizer.encode(text, add_special_tokens=False)
        cache = an.ResidualCache()
        key = cache.key(eng.fingerprint, ids)
        an.analyze(eng.model, eng.saes, eng.hook_name, ids, resid_cache=cache, cache_key=key)
        lens = an.logit_lens(eng.model, ids, top=5, resid_cache=cache, cache_key=key)
        out.append((ids, lens, *notebook(eng.model, ids)))
    return out


def test_lens_meets_the_bar_against_the_fp32_notebook(embedded_engine, cells):
    tok = embedded_engine.tokenizer
    agree = total = 0
    worst = 0.0
    for _ids, lens, v, i, _acc, _kl in cells:
        for li in range(v.shape[0]):
            for p in range(v.shape[1]):
                agree += lens.top_tokens[li][p][0] == tok.decode([int(i[li, p, 0])])
                total += 1
        worst = max(worst, float((torch.tensor(lens.top_probs) - v).abs().max()))
    assert total > 2500
    print(f"lens vs fp32 notebook: top-1 agreement {agree / total:.5f} over {total} cells, max |dp| {worst:.2e}")
    assert agree / total >= 0.999, (agree, total)
    assert worst <= 1e-3, worst


def test_plain_bf16_misses_the_bar(embedded_engine, cells):
    """The control: rounding the normalised residual and W_U to bf16 and taking the softmax there (no split, no fp32
    rescoring) moves shown probabilities by more than 1e-3, so the bar above can fail."""
    W = embedded_engine.model.W_U.detach().to(torch.bfloat16)
    worst = 0.0
    for _ids, _lens, v, _i, acc, _kl in cells:
        with torch.inference_mode():
            rough = (acc.to(torch.bfloat16) @ W).float().softmax(-1).topk(5, dim=-1).values
        worst = max(worst, float((rough - v).abs().max()))
    print(f"plain bf16: max |dp| {worst:.2e}")
    assert worst > 1e-3, worst


@pytest.mark.parametrize("path", ["bf16", "int8"])
def test_each_low_precision_path_meets_the_bar(embedded_engine, cells, path):
    """Both low-precision kernels, forced, against the fp32 notebook: the lens picks one by CPU (int8 where it has
    VNNI, else bf16 where it has bf16 units), and either must meet the bar wherever it runs. The one picked here is
    the lens of test_lens_meets_the_bar_against_the_fp32_notebook, so only the other runs again."""
    m = embedded_engine.model
    if pick_precision(m.W_U, None) == path:
        pytest.skip(f"{path} is the path the lens takes on this CPU: checked by the test above")
    agree = total = 0
    worst = 0.0
    for ids, _lens, v, i, _acc, _kl in cells:
        with torch.inference_mode():
            pv, pi = an.lens_top(m, an.lens_residuals(m, ids).reshape(-1, m.cfg.d_model), 5, low_precision=path)
        pv, pi = pv.reshape(v.shape), pi.reshape(i.shape)
        agree += int((pi[..., 0] == i[..., 0]).sum())
        total += pi[..., 0].numel()
        worst = max(worst, float((pv - v).abs().max()))
    print(f"{path} lens vs fp32 notebook: top-1 agreement {agree / total:.5f} over {total} cells, max |dp| {worst:.2e}")
    assert agree / total >= 0.999, (agree, total)
    assert worst <= 1e-3, worst


def test_the_fastest_path_is_what_runs_here(embedded_engine, cells, monkeypatch):
    """The lens, each cell's KL included, takes the fastest kernel this CPU has: int8 with VNNI, else bf16 with bf16
    units (else the exact fp32 one)."""
    m = embedded_engine.model
    path = pick_precision(m.W_U, None)
    if path == "fp32":
        pytest.skip("neither int8 (VNNI) nor bf16 matmul units on this CPU: the lens runs in fp32")
    ids, lens, v, _i, _acc, _kl = cells[0]
    m.__dict__.pop(f"_asn_lens_{path}", None)
    calls = []
    real = getattr(unembed, f"_{path}_chunk")
    monkeypatch.setattr(unembed, f"_{path}_chunk", lambda *a: calls.append(1) or real(*a))
    with torch.inference_mode():  # the lens the page shows, KL included
        an.logit_lens(m, ids, top=5)
    assert calls and getattr(m, f"_asn_lens_{path}", None) is not None
    with torch.inference_mode():
        exact_v, _ = an.lens_top(m, an.lens_residuals(m, ids).reshape(-1, m.cfg.d_model), 5, low_precision=False)
    # the fp32 path equals the notebook way up to summation order: 1.02e-5 measured at 2 of 8,370 cells (issue 17 too)
    assert exact_v.reshape(v.shape).numpy() == pytest.approx(v.numpy(), abs=5e-5)
    assert torch.tensor(lens.top_probs).numpy() == pytest.approx(v.numpy(), abs=1e-3)


def test_lens_kl_meets_the_bar_against_the_fp32_notebook(cells):
    """Each cell's KL to the model's output (the strip above the grid and the cell's tooltip, 3 decimals) from the
    lens kernel against the notebook's full log-softmax: within 2e-3 nats everywhere (measured: 1.4e-3 on the bf16
    path, 4e-4 on the exact fp32 one)."""
    worst = 0.0
    for _ids, lens, _v, _i, _acc, kl in cells:
        assert len(lens.kl) == kl.shape[0]
        worst = max(worst, float((torch.tensor(lens.kl) - kl).abs().max()))
    print(f"lens KL vs fp32 notebook: max |dKL| {worst:.2e} nats")
    assert worst <= 2e-3, worst
