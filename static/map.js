// The map view: clicks open a feature's card, zooming in shows feature labels, the colour/filter controls swap the
// base map (fetched from /map/figure, with the address and tab title to apply), and the prompt's paths (from the
// result fragment) are drawn on top.
(function () {
  var LABELS_AT = 250; // show text labels when at most this many points are in view
  // Without WebGL (no GPU, blocked driver) scattergl draws nothing: fall back to SVG scatter (slower, same look).
  // No test context here: creating one costs 0.1 s on a software GL; a browser whose WebGL fails inside Plotly is
  // redrawn as SVG by svgIfGlFailed.
  var WEBGL = !!window.WebGLRenderingContext;

  function forRenderer(traces) {
    if (WEBGL) return traces;
    return (traces || []).map(function (t) { return t.type === 'scattergl' ? Object.assign({}, t, { type: 'scatter' }) : t; });
  }

  // the server sends each trace's per-point fields in columns (app/viz/map.py `columns`); Plotly wants customdata =
  // [sae, index, density text, example] per point (the example is fetched on first hover) and a colour per point
  function expand(traces) {
    return (traces || []).map(function (t) {
      var c = t.columns;
      if (!c) return t;
      var n = t.x.length, cd = new Array(n), start = typeof c.index === 'number' ? c.index : null;
      for (var i = 0; i < n; i++) cd[i] = [c.sae, start === null ? c.index[i] : start + i, c.density[i], ''];
      var out = Object.assign({}, t, { customdata: cd });
      delete out.columns;
      if (c.colors) {
        var col = new Array(n);
        for (var j = 0; j < n; j++) col[j] = c.palette[c.colors[j]];
        out.marker = Object.assign({}, t.marker, { color: col });
      }
      return out;
    });
  }

  // the page's base map, parsed once (it has no data-figure: figures.js leaves it to this file)
  var FIG = null;
  function pageFigure() {
    if (FIG) return FIG;
    var s = document.getElementById('map-main-data');
    try { FIG = s ? JSON.parse(s.textContent) : null; } catch (e) { FIG = null; }
    return FIG;
  }

  // the WebGL canvas at the screen's own pixel ratio (Plotly's default is 2: four times the pixels on a plain screen)
  function config(fig) {
    return Object.assign({ responsive: true, displaylogo: false, plotGlPixelRatio: window.devicePixelRatio || 1 },
                         (fig || {}).config || {});
  }

  // WebGL may be there and still fail inside Plotly (driver blocklist, too many contexts, a stub): then
  // Plotly shows its "WebGL is not supported" box instead of the points; redraw as SVG
  // (with a copy of the layout the failed draw was given: Plotly wrote ranges fitted to the WebGL traces into it)
  function svgIfGlFailed(el, layout) {
    if (!el.querySelector('.no-webgl')) return Promise.resolve();
    WEBGL = false;
    el.dataset.renderer = 'svg';
    var data = forRenderer(el.data);
    Plotly.purge(el);
    el.dataset.bound = '';
    return Plotly.newPlot(el, data, layout, config(pageFigure()));
  }

  // a point's example line comes from /map/example on its first hover, then the label is drawn again where it is;
  // kept per point (not only in the trace) because a recolour or filter rebuilds the traces without it
  var examples = {};  // 'sae:index' -> the example line ('' when the atlas has none), true while it is being fetched
  function hoverExample(el, ev) {
    var pt = ev.points && ev.points[0], cd = pt && pt.customdata;
    if (!cd || pt.data.meta === 'path' || cd.length < 4 || cd[3]) return;
    var key = cd[0] + ':' + cd[1], known = examples[key];
    function show(text) {
      cd[3] = text; // the array the trace holds, so every later hover shows it too
      var now = el._hoverdata && el._hoverdata[0], at = now && now.customdata;
      if (text && at && at[0] + ':' + at[1] === key && ev.event) Plotly.Fx.hover(el, ev.event, 'xy'); // still on it
    }
    if (typeof known === 'string') { show(known); return; }
    if (known) return;
    examples[key] = true;
    fetch('/map/example/' + encodeURIComponent(cd[0]) + '/' + cd[1]).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (got) {
        if (!got) { delete examples[key]; return; } // asked again on the next hover
        examples[key] = got.example || '';
        show(examples[key]);
      })
      .catch(function () { delete examples[key]; });
  }

  function mapEl() { return document.getElementById('map-main'); }

  function pathTraces() {
    var s = document.getElementById('map-paths-data');
    if (!s) return [];
    try { return (JSON.parse(s.textContent).data || []); } catch (e) { return []; }
  }

  function baseTraces(el) {
    return (el.data || []).filter(function (t) { return t.meta !== 'path' && t.meta !== 'labels' && t.meta !== 'focus'; });
  }

  // a found place (templates/fragments/map_search.html, the region list): show its box; a feature gets a ring and
  // its card. Buttons, so the whole path works from the keyboard.
  function fly(btn) {
    var el = mapEl(), b = btn.dataset;
    if (!el || !el.layout || !window.Plotly) return;
    var idx = [];
    (el.data || []).forEach(function (t, i) { if (t.meta === 'focus') idx.push(i); });
    var p = idx.length ? Plotly.deleteTraces(el, idx) : Promise.resolve();
    var view = b.all ? { 'xaxis.autorange': true, 'yaxis.autorange': true }
      : { 'xaxis.range': [+b.x0, +b.x1], 'yaxis.range': [+b.y0, +b.y1] };
    el.dataset.flown = b.feature || (b.region !== undefined ? 'region:' + b.region : 'all');
    p.then(function () {
      if (!b.feature) return null;
      return Plotly.addTraces(el, { type: 'scatter', mode: 'markers', x: [+b.x], y: [+b.y], meta: 'focus', hoverinfo: 'skip',
        showlegend: false, marker: { symbol: 'circle-open', size: 22, color: '#111827', line: { width: 3 } } });
    }).then(function () { return Plotly.relayout(el, view); });  // plotly_relayout: labels + names for the new view
    var box = el.getBoundingClientRect();  // on a phone the list sits below the map: bring the map into view
    if (box.top < 0 || box.bottom > window.innerHeight) el.scrollIntoView({ block: 'nearest' });
    if (b.feature) {
      var parts = b.feature.split(':');
      el.dataset.clicked = b.feature;
      htmx.ajax('GET', '/map/feature/' + encodeURIComponent(parts[0]) + '/' + parts[1], { target: '#map-card', swap: 'innerHTML' });
    }
  }
  document.addEventListener('click', function (e) {
    var btn = e.target.closest && e.target.closest('button.map-go');
    if (btn) { e.preventDefault(); fly(btn); }
  });

  function labels(el) {
    var xr = el.layout && el.layout.xaxis && el.layout.xaxis.range, yr = el.layout && el.layout.yaxis && el.layout.yaxis.range;
    if (!xr || !yr) return Promise.resolve();
    var xs = [], ys = [], ts = [];
    baseTraces(el).forEach(function (t) {
      for (var i = 0; i < t.x.length; i++) {
        if (t.x[i] >= xr[0] && t.x[i] <= xr[1] && t.y[i] >= yr[0] && t.y[i] <= yr[1]) {
          xs.push(t.x[i]); ys.push(t.y[i]); ts.push(t.text ? t.text[i] : '');
        }
      }
    });
    var idx = [];
    (el.data || []).forEach(function (t, i) { if (t.meta === 'labels') idx.push(i); });
    var p = idx.length ? Plotly.deleteTraces(el, idx) : Promise.resolve();
    if (xs.length === 0 || xs.length > LABELS_AT) { el.dataset.labels = '0'; return p; }
    el.dataset.labels = String(xs.length);
    return p.then(function () {
      return Plotly.addTraces(el, { type: 'scatter', mode: 'text', x: xs, y: ys, text: ts, meta: 'labels', hoverinfo: 'skip',
        showlegend: false, textfont: { size: 9, color: '#374151' }, textposition: 'top center' });
    });
  }

  // region names come largest region first; at this zoom and box size, a name that would cover an earlier one is
  // hidden (each zoom shows them all again and re-checks: zooming in makes room)
  function declutter(el) {
    var n = ((el.layout && el.layout.annotations) || []).length, show = {};
    if (!n) return Promise.resolve();
    for (var i = 0; i < n; i++) show['annotations[' + i + '].visible'] = true;
    return Plotly.relayout(el, show).then(function () {
      var kept = [], hide = {}, hidden = 0;
      [].slice.call(el.querySelectorAll('.infolayer g.annotation')).map(function (g) {
        return { i: +g.getAttribute('data-index'), b: g.getBoundingClientRect() };
      }).sort(function (a, b) { return a.i - b.i; }).forEach(function (a) {
        var b = a.b, clash = kept.some(function (k) {
          return b.left < k.right && b.right > k.left && b.top < k.bottom && b.bottom > k.top;
        });
        if (clash) { hide['annotations[' + a.i + '].visible'] = false; hidden++; } else kept.push(b);
      });
      el.dataset.hiddenNames = String(hidden);
      return hidden ? Plotly.relayout(el, hide) : null;
    });
  }

  function setPaths(el) {
    var idx = [];
    (el.data || []).forEach(function (t, i) { if (t.meta === 'path') idx.push(i); });
    var p = idx.length ? Plotly.deleteTraces(el, idx) : Promise.resolve();
    var traces = pathTraces();
    el.dataset.paths = String(traces.length);
    return p.then(function () { return traces.length ? Plotly.addTraces(el, traces) : null; });
  }

  function viewParams() {
    var form = document.getElementById('map-view');
    var p = new URLSearchParams();
    if (!form) return p;
    new FormData(form).forEach(function (v, k) { if (v !== '') p.set(k, v); });
    return p;
  }

  function swapBase() {
    var el = mapEl();
    if (!el) return;
    var p = viewParams();
    el.dataset.ready = '0';
    var errBox = document.getElementById('map-view-error');  // templates/map.html, above the map
    errBox.replaceChildren();
    // the server answers the figure with the page's address for it (its current one, sent as htmx sends it, with
    // these view fields) and the tab title; map.js only applies them
    fetch('/map/figure?' + p.toString(), { headers: { 'HX-Current-URL': location.href } }).then(function (r) {
      if (r.ok) return r.json();
      return window.asnForms.responseLines(r).then(function (lines) { window.asnForms.show(errBox, lines, 'Could not redraw the map'); return null; });
    }).catch(function () {
      window.asnForms.show(errBox, ['the server could not be reached (is it running?); try again'], 'Could not redraw the map'); return null;
    }).then(function (fig) {
      if (!fig) return;
      if (fig.address) { history.replaceState(null, '', fig.address); document.title = fig.title; }
      var layout = fig.layout;
      delete layout.height; // the box's CSS height
      if (el.layout && el.layout.xaxis && el.layout.xaxis.range) { // keep the zoom
        layout.xaxis = Object.assign({}, layout.xaxis, { range: el.layout.xaxis.range });
        layout.yaxis = Object.assign({}, layout.yaxis, { range: el.layout.yaxis.range });
      }
      var given = JSON.parse(JSON.stringify(layout));
      return Plotly.react(el, forRenderer(expand(fig.data)).concat(pathTraces()), layout, config(fig))
        .then(function () { return svgIfGlFailed(el, given); })
        .then(function () { bind(el); return labels(el); })
        .then(function () { return declutter(el); })
        .then(function () { el.dataset.ready = '1'; });
    });
  }

  function bind(el) {
    if (el.dataset.bound) return;
    el.dataset.bound = '1';
    el.on('plotly_click', function (ev) {
      var pt = ev.points && ev.points[0];
      if (!pt || !pt.customdata || pt.data.meta === 'path') return;
      var sae = pt.customdata[0], index = pt.customdata[1];
      el.dataset.clicked = sae + ':' + index;
      htmx.ajax('GET', '/map/feature/' + encodeURIComponent(sae) + '/' + index, { target: '#map-card', swap: 'innerHTML' });
    });
    el.on('plotly_hover', function (ev) { hoverExample(el, ev); });
    el.on('plotly_relayout', function (ev) {
      if (ev && (ev['xaxis.range[0]'] !== undefined || ev['xaxis.autorange'] !== undefined || ev['xaxis.range'])) {
        labels(el).then(function () { return declutter(el); });
      }
    });
  }

  function init() {
    var el = mapEl(), fig = pageFigure();
    if (!el || !window.Plotly) return;
    el.dataset.renderer = WEBGL ? 'webgl' : 'svg';
    if (fig) {
      var layout = fig.layout || {};
      delete layout.height; // the box's CSS height (640 px, 420 px on phones)
      var given = JSON.parse(JSON.stringify(layout));
      Plotly.react(el, forRenderer(expand(fig.data)), layout, config(fig))
        .then(function () { return svgIfGlFailed(el, given); }).then(function () { return setPaths(el); }).then(function () {
          bind(el); el.dataset.readyAt = String(performance.now()); // first paint (bench/map.py)
          return declutter(el);
        }).then(function () { el.dataset.ready = '1'; });
    }
    var form = document.getElementById('map-view');
    if (form) {
      form.addEventListener('change', swapBase);
      form.addEventListener('submit', function (e) { e.preventDefault(); swapBase(); });
    }
  }

  // deferred after plotly.min.js: the document is parsed and Plotly is there, so draw now, before DOMContentLoaded
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
  document.addEventListener('htmx:afterSettle', function (e) {
    var el = mapEl();
    if (e.target && e.target.id === 'map-result' && el && el.data) setPaths(el);
  });
  document.addEventListener('click', function (e) {
    var a = e.target.closest && e.target.closest('a.map-cosine');
    if (!a) return;
    e.preventDefault();
    document.getElementById('map-feature').value = a.dataset.feature;
    document.getElementById('map-color').value = 'cosine';
    swapBase();
  });
})();
