"""The /profile page renders the same service as /api/profile."""
from __future__ import annotations

import re


def test_profile_page(tiny_client):
    api = tiny_client.get("/api/profile").json()
    r = tiny_client.get("/profile")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    assert '<a href="/profile" class="on">Profile</a>' in html
    assert "<code>blocks.1.hook_resid_post</code>" in html
    for s in api["saes"]:
        assert re.search(rf"<td>{s['name']} <span class=\"muted\">{re.escape(s['display'])}</span></td><td>topk</td>"
                         rf"<td class=\"num\">{s['d_sae']:,}</td>", html)
    assert "make run PROFILE=gpt2-small" in html and "needs model: gpt2" in html
    assert "python -m app serve --model NAME_OR_PATH" in html
