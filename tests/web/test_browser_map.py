"""The map in a real browser at a desktop and a phone viewport (tiny profile, uvicorn on 127.0.0.1): the map
renders (WebGL, or SVG where the browser has none), hover and click work, a prompt's path appears with and
without a system prompt, the page never scrolls sideways, and the view saves and re-opens from its share link."""
from __future__ import annotations

import json

import pytest

from tests.conftest import wait_js
from tests.web.browser import ARTIFACTS, BROWSER_MARKS, fresh_page, page_errors, save_from_box

pytestmark = BROWSER_MARKS
PROMPT, SYSTEM = "Tell me about cats.", "You are a pirate."


def open_point(page) -> tuple[str, float, float]:
    """A fine feature's point that the mouse can reach: inside the plot area away from its edges (legend, mode bar),
    with Plotly's drag layer topmost there (no region label or legend over it), the one farthest from any other point
    (8 px at least; a phone-sized map has few points 12 px clear), so hover and click mean that feature.
    -> ("sae index", page x, page y) from Plotly's own axis mapping."""
    got = page.evaluate("""() => {
        const el = document.getElementById('map-main'), fl = el._fullLayout, box = el.getBoundingClientRect();
        const xa = fl.xaxis, ya = fl.yaxis, pts = [];
        for (const t of el.data) {
            if (!t.customdata) continue;
            for (let i = 0; i < t.x.length; i++)
                pts.push([t.customdata[i][0] + ' ' + t.customdata[i][1], box.left + xa._offset + xa.l2p(t.x[i]),
                          box.top + ya._offset + ya.l2p(t.y[i])]);
        }
        const seen = {};
        let best = null;
        for (const [name, x, y] of pts) {
            if (!name.startsWith('fine ')) continue;
            if (x < box.left + xa._offset + 40 || x > box.left + xa._offset + xa._length - 40) continue;
            if (y < box.top + ya._offset + 60 || y > box.top + ya._offset + ya._length - 80) continue;
            if (y > window.innerHeight - 10 || y < 10) continue;
            const top = document.elementFromPoint(x, y);
            const what = top ? top.tagName + '.' + (top.getAttribute('class') || '') : 'nothing';
            seen[what] = (seen[what] || 0) + 1;
            if (!top || !el.contains(top) || top.closest('.legend, .annotation, .modebar-container')) continue;
            const gap = Math.min(...pts.filter(([n]) => n !== name).map(([, u, v]) => Math.hypot(u - x, v - y)));
            if (gap >= 8 && (!best || gap > best[3])) best = [name, x, y, gap];
        }
        return best || JSON.stringify(seen); }""")
    assert isinstance(got, list), f"no isolated, unoccluded point on the map; topmost elements over points: {got}"
    return got[0], got[1], got[2]


def point_xy(page, name: str) -> tuple[float, float]:
    """Where the named point ("sae index") is drawn now, in viewport pixels, from Plotly's axis mapping."""
    got = page.evaluate("""name => {
        const el = document.getElementById('map-main'), fl = el._fullLayout, box = el.getBoundingClientRect();
        for (const t of el.data) {
            if (!t.customdata) continue;
            for (let i = 0; i < t.x.length; i++)
                if (t.customdata[i][0] + ' ' + t.customdata[i][1] === name)
                    return [box.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[i]), box.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[i])];
        }
        return null; }""", name)
    assert got, f"{name} is not drawn"
    return got[0], got[1]


HOVER_SPY = ("window.__hovered = null; document.getElementById('map-main').on('plotly_hover', d => "
             "{ window.__hovered = d.points[0].customdata.slice(0, 2).join(' '); })")


def hover_point(page, name: str, x: float, y: float, tries: int = 3) -> None:
    """Move the mouse onto the named point until Plotly's plotly_hover names it.

    Plotly emits plotly_hover only when the hovered points change, and throttles it (50 ms); after a redraw the old
    hover can linger. So each try clears Plotly's hover (Fx.unhover, as a mouse leaving the map does), listens
    again (a listener set before a redraw may be gone with it), and comes in from 15 px aside."""
    for attempt in range(tries):
        page.evaluate("Plotly.Fx.unhover(document.getElementById('map-main')); " + HOVER_SPY)
        page.mouse.move(x - 15, y - 15)
        page.mouse.move(x, y, steps=4)
        try:
            wait_js(page, f"window.__hovered === {json.dumps(name)}", timeout_s=15)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise AssertionError(page.evaluate(f"""() => {{ const el = document.getElementById('map-main'),
                    top = document.elementFromPoint({x}, {y}); return 'no plotly_hover for {name} at ' + {x} + ',' + {y} +
                    ' over ' + (top && top.getAttribute('class')) + '; last: ' + window.__hovered + '; hoverdata: ' +
                    JSON.stringify((el._hoverdata || []).map(p => p.customdata && p.customdata.slice(0, 2))); }}""")) from None


# CSP refusals (e.g. an eval in a script) are reported in the page as securitypolicyviolation events
CSP_SPY = """window.__csp = []; document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + (e.sourceFile || e.blockedURI) + ':' + e.lineNumber));"""
HAS_WEBGL = "(() => { const c = document.createElement('canvas'); return !!c.getContext('webgl'); })()"

NO_WEBGL = """(() => { const get = HTMLCanvasElement.prototype.getContext;
    HTMLCanvasElement.prototype.getContext = function (kind, ...a) {
        return /webgl/.test(String(kind)) ? null : get.call(this, kind, ...a); }; })();"""


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")


def names_overlapping(page) -> list:
    """Pairs of region names drawn on the map whose boxes intersect (map.js hides the later, smaller region's)."""
    boxes = page.evaluate("[...document.querySelectorAll('#map-main .infolayer g.annotation')].map(g => "
                          "{ const b = g.getBoundingClientRect(); return [g.textContent, b.left, b.top, b.right, b.bottom]; })")
    return [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[:i]
            if a[1] < b[3] and a[3] > b[1] and a[2] < b[4] and a[4] > b[2]]


# desktop: the browser's own WebGL; phone: a browser without WebGL, where map.js falls back to SVG scatter
@pytest.mark.parametrize("viewport,webgl", [({"width": 1440, "height": 900}, True), ({"width": 390, "height": 844}, False)],
                         ids=["desktop-webgl", "phone-svg"])
def test_map_hover_click_paths_save(atlas_server, webgl_browser, viewport, webgl):
    ARTIFACTS.mkdir(exist_ok=True)
    tag = f"{viewport['width']}x{viewport['height']}"
    ctx, page = fresh_page(webgl_browser, viewport=viewport)
    ctx.add_init_script(CSP_SPY)
    if not webgl:
        ctx.add_init_script(NO_WEBGL)
    errors, examples = page_errors(page), []
    page.on("request", lambda r: examples.append(r.url.split("/map/example/")[1]) if "/map/example/" in r.url else None)
    page.goto(atlas_server + "/map")
    page.wait_for_selector('#map-main[data-ready="1"]')
    # webgl=True: the browser's WebGL (SwiftShader here) must really draw the map: under the app's CSP (no eval) that
    # needs Plotly's strict bundle, whose shaders come precompiled; webgl=False: no WebGL at all, SVG from the first draw
    assert page.evaluate("window.__csp") == []
    renderer = page.get_attribute("#map-main", "data-renderer")
    assert renderer == ("webgl" if webgl and page.evaluate(HAS_WEBGL) else "svg")
    kind = "scattergl" if renderer == "webgl" else "scatter"
    types = page.evaluate("document.getElementById('map-main').data.filter(t => t.customdata).map(t => t.type)")
    assert set(types) == {kind}
    n = page.evaluate("document.getElementById('map-main').data.filter(t => t.customdata).reduce((a, t) => a + t.x.length, 0)")
    assert n == 64 + 512
    assert page.locator("#map-main .no-webgl").count() == 0  # never Plotly's "WebGL is not supported" box
    if renderer == "webgl":  # Plotly's WebGL layer holds a live webgl context
        assert page.evaluate("!!document.querySelector('#map-main canvas.gl-canvas-context').getContext('webgl')")
    else:
        assert page.locator("#map-main .scatterlayer .point").count() == n  # every point an SVG path
    assert "Neighbour preservation@10" in page.locator("#map-honesty").inner_text()
    assert no_horizontal_scroll(page)
    assert page.locator("#map-main .infolayer g.annotation").count() > 0 and names_overlapping(page) == []

    # hover a point that is not hidden under a region label: Plotly's hover label (SVG) names it
    page.locator("#map-main").scroll_into_view_if_needed()
    name, x, y = open_point(page)
    # Plotly throttles hover (50 ms): under load the label first seen may belong to a point the mouse passed on its way,
    # so wait for the hover event of the point the mouse stopped on, then for its label (an SVG <g>: no innerText)
    hover_point(page, name, x, y)
    wait_js(page, "[...document.querySelectorAll('#map-main .hoverlayer .hovertext')]"
           f".some(g => g.textContent.includes({json.dumps(name)}))", timeout_s=30)
    # the hover line's atlas example is not in the page: map.js asks /map/example for the point on its first hover
    wait_js(page, "performance.getEntriesByType('resource').some(r => r.name.endsWith("
                  f"'/map/example/{name.replace(' ', '/')}'))", timeout_s=30)
    assert name.replace(" ", "/") in examples
    # the example line is in the hovered point's data (what its label draws) once fetched, and still after a filter
    # rebuilds the traces, without a second fetch: the server's snippet for that point
    got = json.loads(page.request.get(atlas_server + "/map/example/" + name.replace(" ", "/")).text())["example"]
    assert got
    hovered_example = "(() => { const h = document.getElementById('map-main')._hoverdata; return h && h[0] && " \
                      f"h[0].customdata.slice(0, 2).join(' ') === {json.dumps(name)} && h[0].customdata[3]; }})()"
    wait_js(page, f"{hovered_example} === {json.dumps(got)}", timeout_s=30)
    sae = name.split(" ")[0]
    scrolled = page.evaluate("window.scrollY")
    page.select_option("#map-show", sae)  # a filter that keeps the point where it is (no colour bar moves the plot)
    wait_js(page, f"new URLSearchParams(location.search).get('show') === {json.dumps(sae)} && "
                  "document.getElementById('map-main').dataset.ready === '1'", timeout_s=60)
    assert page.title() == "Map · Activation Space Navigator"  # the address and title /map/figure answered
    # choosing an option scrolls the select into view (on a phone it sits above the map): go back to where the
    # point was found, and take its position again from Plotly's own axis mapping
    page.evaluate(f"window.scrollTo(0, {scrolled})")
    x, y = point_xy(page, name)
    hover_point(page, name, x, y)
    wait_js(page, f"{hovered_example} === {json.dumps(got)}", timeout_s=30)
    assert examples.count(name.replace(" ", "/")) == 1
    page.mouse.click(x, y)
    card = page.locator("#map-card-body")
    card.wait_for()
    clicked = page.evaluate("document.getElementById('map-main').dataset.clicked")
    assert card.get_attribute("data-sae") + ":" + card.get_attribute("data-index") == clicked
    want = json.loads(page.request.get(atlas_server + "/api/map/features/" + clicked.replace(":", "/")).text())
    assert f"({want['x']:.2f}, {want['y']:.2f})" in card.inner_text()

    # the prompt without and with a system prompt: one path, then two
    page.fill("#map-prompt", PROMPT)
    with page.expect_response(lambda r: "/fragments/map" in r.url):
        page.click("#map-btn")
    page.wait_for_selector("#map-result-body")
    wait_js(page, "document.getElementById('map-main').dataset.paths === '1'")
    page.fill("#map-system", SYSTEM)
    with page.expect_response(lambda r: "/fragments/map" in r.url):
        page.click("#map-btn")
    page.wait_for_selector("#map-pull")
    wait_js(page, "document.getElementById('map-main').dataset.paths === '2'")
    names = page.evaluate("document.getElementById('map-main').data.filter(t => t.meta === 'path').map(t => t.name)")
    assert names == ["prompt", "without system prompt"]
    api = json.loads(page.request.post(atlas_server + "/api/map/path", data=json.dumps({"prompt": PROMPT, "system_prompt": SYSTEM}),
                                       headers={"content-type": "application/json"}).text())
    drawn = page.evaluate("document.getElementById('map-main').data.filter(t => t.meta === 'path')[0].x")
    assert drawn == pytest.approx([p["x"] for p in api["paths"][0]["points"] if p["x"] is not None], abs=1e-6)
    assert "system_prompt=You+are+a+pirate." in page.url  # the address carries the inputs
    assert f"show={sae}" in page.url and page.title() == f"{PROMPT} · Map · Activation Space Navigator"
    shift = page.locator("#map-feature-shift").inner_text()
    assert shift == f"{api['pull']['feature_shift']:.3f}"
    assert no_horizontal_scroll(page)
    page.screenshot(path=str(ARTIFACTS / f"map-{tag}.png"), full_page=True)

    # re-open from the address, then save and open the share link in a fresh context
    reopened_ctx, reopened = fresh_page(webgl_browser, viewport=viewport)
    reopened.goto(page.url)
    reopened.wait_for_selector('#map-main[data-ready="1"]')
    wait_js(reopened, "document.getElementById('map-main').dataset.paths === '2'")
    assert reopened.locator("#map-feature-shift").inner_text() == shift
    reopened_ctx.close()
    box = page.locator("#map-result form.save-box")
    save_from_box(page, box, f"cats, pirate ({tag})")
    share = box.locator(".save-status input.saved-url")
    share.wait_for()
    url = share.input_value()
    assert page.evaluate("window.__csp") == []  # hover, click, paths: still no refusal
    ctx.close()

    ctx2, other = fresh_page(webgl_browser, viewport=viewport)
    ctx2.add_init_script(CSP_SPY)
    other.on("pageerror", lambda e: errors.append(str(e)))
    assert other.goto(url).status == 200
    assert other.locator("#map-feature-shift").inner_text() == shift
    wait_js(other, "(() => { const el = document.getElementById('map-paths-fig'); return el && el.data && el.data.length === 2; })()")
    assert no_horizontal_scroll(other)
    other.screenshot(path=str(ARTIFACTS / f"map-saved-{tag}.png"), full_page=True)
    assert other.evaluate("window.__csp") == []
    ctx2.close()
    assert not errors, errors
