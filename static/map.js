// The map view: clicks open a feature's card, zooming in shows feature labels, the colour/filter controls swap the
// base map (fetched from /map/figure), and the prompt's paths (from the result fragment) are drawn on top.
(function () {
  var LABELS_AT = 250; // show text labels when at most this many points are in view
  // Without WebGL (no GPU, blocked driver) scattergl draws nothing: fall back to SVG scatter (slower, same look).
  var WEBGL = (function () {
    try { var c = document.createElement('canvas'); return !!(c.getContext('webgl') || c.getContext('experimental-webgl')); }
    catch (e) { return false; }
  })();

  function forRenderer(traces) {
    if (WEBGL) return traces;
    return (traces || []).map(function (t) { return t.type === 'scattergl' ? Object.assign({}, t, { type: 'scatter' }) : t; });
  }

  // runs before DOMContentLoaded (deferred script), so figures.js draws the base map with the right trace type, at the
  // height map.css gives the box (640 px, 420 px on phones) rather than the figure's fixed one
  (function () {
    var s = document.getElementById('map-main-data'), el = mapEl();
    if (el) el.dataset.renderer = WEBGL ? 'webgl' : 'svg';
    if (!s) return;
    try {
      var fig = JSON.parse(s.textContent);
      fig.data = forRenderer(fig.data);
      if (fig.layout) delete fig.layout.height;
      s.textContent = JSON.stringify(fig);
    } catch (e) { /* leave it */ }
  })();

  // a context that the check above got may still fail inside Plotly (driver blocklist, too many contexts): then
  // Plotly shows its "WebGL is not supported" box instead of the points; redraw as SVG
  function svgIfGlFailed(el) {
    if (!el.querySelector('.no-webgl')) return Promise.resolve();
    WEBGL = false;
    el.dataset.renderer = 'svg';
    var data = forRenderer(el.data), layout = el.layout, s = document.getElementById('map-main-data'), config = {};
    try { config = JSON.parse(s.textContent).config || {}; } catch (e) { /* defaults */ }
    Plotly.purge(el);
    el.dataset.bound = '';
    return Plotly.newPlot(el, data, layout, Object.assign({ responsive: true, displaylogo: false }, config));
  }

  function mapEl() { return document.getElementById('map-main'); }

  function pathTraces() {
    var s = document.getElementById('map-paths-data');
    if (!s) return [];
    try { return (JSON.parse(s.textContent).data || []); } catch (e) { return []; }
  }

  function baseTraces(el) {
    return (el.data || []).filter(function (t) { return t.meta !== 'path' && t.meta !== 'labels'; });
  }

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
    var errBox = document.getElementById('map-view-error');
    if (!errBox) { errBox = document.createElement('div'); errBox.id = 'map-view-error'; el.parentNode.insertBefore(errBox, el); }
    errBox.replaceChildren();
    fetch('/map/figure?' + p.toString()).then(function (r) {
      if (r.ok) return r.json();
      return window.asnForms.responseLines(r).then(function (lines) { window.asnForms.show(errBox, lines, 'Could not redraw the map'); return null; });
    }).catch(function () {
      window.asnForms.show(errBox, ['the server could not be reached (is it running?); try again'], 'Could not redraw the map'); return null;
    }).then(function (fig) {
      if (!fig) return;
      var layout = fig.layout;
      delete layout.height; // the box's CSS height
      if (el.layout && el.layout.xaxis && el.layout.xaxis.range) { // keep the zoom
        layout.xaxis = Object.assign({}, layout.xaxis, { range: el.layout.xaxis.range });
        layout.yaxis = Object.assign({}, layout.yaxis, { range: el.layout.yaxis.range });
      }
      return Plotly.react(el, forRenderer(fig.data).concat(pathTraces()), layout, fig.config)
        .then(function () { return svgIfGlFailed(el); })
        .then(function () { bind(el); return labels(el); })
        .then(function () { el.dataset.color = p.get('color_by') || ''; el.dataset.ready = '1'; });
    });
    var q = new URLSearchParams(location.search);
    ['color_by', 'show', 'feature', 'discovery'].forEach(function (k) { if (p.has(k)) q.set(k, p.get(k)); else q.delete(k); });
    history.replaceState(null, '', '?' + q.toString());
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
    el.on('plotly_relayout', function (ev) {
      if (ev && (ev['xaxis.range[0]'] !== undefined || ev['xaxis.autorange'] !== undefined || ev['xaxis.range'])) labels(el);
    });
  }

  function init() {
    var el = mapEl();
    if (!el || !window.Plotly) return;
    var tries = 0;
    (function wait() { // figures.js draws the base map (data-figure); the paths go on top of it
      if (!el.data && tries++ < 100) { setTimeout(wait, 30); return; }
      var start = el.data ? Promise.resolve() : (function () {
        var fig = JSON.parse(document.getElementById('map-main-data').textContent);
        return Plotly.react(el, forRenderer(fig.data), fig.layout, fig.config);
      })();
      start.then(function () { return svgIfGlFailed(el); }).then(function () { return setPaths(el); }).then(function () {
        bind(el); el.dataset.readyAt = String(performance.now()); el.dataset.ready = '1';
      });
    })();
    var form = document.getElementById('map-view');
    if (form) {
      form.addEventListener('change', swapBase);
      form.addEventListener('submit', function (e) { e.preventDefault(); swapBase(); });
    }
  }

  document.addEventListener('DOMContentLoaded', function () { setTimeout(init, 0); });
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
