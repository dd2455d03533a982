"""Unlisted share links in a real browser: what context A saved never appears in context B's list page or B's API
list, yet B opens A's link (and sees it as computed by the server)."""
from __future__ import annotations

from tests.conftest import serve_engine
from tests.web.browser import ARTIFACTS, BROWSER_MARKS, TIMEOUT_MS, api, launched

pytestmark = BROWSER_MARKS


def test_what_a_saved_is_not_listed_to_b_but_opens_by_link(tiny_engine, tmp_path):
    with serve_engine(tiny_engine, store_url=f"sqlite:///{tmp_path}/e.db") as server, launched() as browser:
        ctx_a, ctx_b = browser.new_context(), browser.new_context()
        a, b = ctx_a.new_page(), ctx_b.new_page()
        for page in (a, b):
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server + "/e")  # each context gets its own owner cookie here
        cookie = [c for c in ctx_a.cookies() if c["name"] == "asn_owner"]
        assert cookie and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Lax"
        inputs = {"prompt": "A private thought", "top_k": 3}
        result = api(a, "POST", f"{server}/api/analyze", inputs)
        saved = api(a, "POST", f"{server}/api/explorations",
                    {"kind": "analysis", "title": "only-for-a", "inputs": inputs, "result": result})
        assert saved["computed"] is True
        a.goto(server + "/e")
        assert a.locator("table.explorations a", has_text="only-for-a").count() == 1
        b.goto(server + "/e")
        assert b.locator("table.explorations a", has_text="only-for-a").count() == 0
        assert "only-for-a" not in b.content()
        listed = api(b, "GET", f"{server}/api/explorations")
        assert saved["id"] not in {i["id"] for i in listed["items"]} and listed["total"] == 0
        r = b.goto(server + saved["url"])
        assert r.status == 200 and b.locator("h1.exploration-title").inner_text() == "only-for-a"
        assert b.locator(".provenance-warning").count() == 0  # the server computed it
        ARTIFACTS.mkdir(exist_ok=True)
        b.screenshot(path=str(ARTIFACTS / "share-link-opened-by-b.png"), full_page=True)
        ctx_a.close()
        ctx_b.close()
