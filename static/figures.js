// Draws every Plotly figure shipped as JSON in <script type="application/json" data-figure="ID"> next to <div id="ID">.
(function () {
  function draw(root) {
    (root || document).querySelectorAll('script[type="application/json"][data-figure]').forEach(function (s) {
      var el = document.getElementById(s.dataset.figure);
      if (!el || !window.Plotly) return;
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
  document.addEventListener('DOMContentLoaded', function () { draw(document); });
  document.addEventListener('htmx:afterSettle', function (e) { draw(e.target); });
})();
