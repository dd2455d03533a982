// Draws every Plotly figure shipped as JSON in <script type="application/json" data-figure="ID"> next to <div id="ID">.
// plotly.js (1.6 MB gzipped) is fetched only when a page has a figure to draw: its address (hashed, cached for a
// year) is this script's data-plotly; the map page, which always draws, loads it itself.
(function () {
  var PLOTLY = document.currentScript && document.currentScript.dataset.plotly;
  var waiting = null;
  function withPlotly(fn) {
    if (window.Plotly) return fn();
    if (!PLOTLY) return;
    if (!waiting) {
      waiting = [];
      var s = document.createElement('script');
      s.src = PLOTLY;
      s.onload = function () { var q = waiting; waiting = null; q.forEach(function (f) { f(); }); };
      s.onerror = function () { waiting = null; };
      document.head.appendChild(s);
    }
    waiting.push(fn);
  }
  function draw(root) {
    var blocks = (root || document).querySelectorAll('script[type="application/json"][data-figure]');
    // a placeholder whose content will draw (the lens computing): fetch plotly.js while the server works
    if (!blocks.length && !window.Plotly && (root || document).querySelector('[data-will-draw]')) withPlotly(function () {});
    if (!blocks.length) return;
    if (!window.Plotly) return withPlotly(function () { draw(root); });
    blocks.forEach(function (s) {
      var el = document.getElementById(s.dataset.figure);
      if (!el || !el.isConnected) return;
      var fig = JSON.parse(s.textContent);
      Plotly.react(el, fig.data || [], fig.layout || {}, Object.assign({ responsive: true, displaylogo: false }, fig.config || {}));
      if (!el.dataset.links && (fig.data || []).some(function (t) { return t.meta === 'links'; })) {
        el.dataset.links = '1';  // traces with meta "links" carry an address per point: a click opens it
        el.on('plotly_click', function (ev) {
          var pt = ev.points && ev.points[0];
          if (pt && pt.data.meta === 'links' && typeof pt.customdata === 'string' && pt.customdata.charAt(0) === '/') location.href = pt.customdata;
        });
      }
    });
  }
  window.asnDrawFigures = draw;
  window.asnWithPlotly = withPlotly;
  document.addEventListener('DOMContentLoaded', function () { draw(document); });
  document.addEventListener('htmx:afterSettle', function (e) { draw(e.target); });
})();
