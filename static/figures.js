// Draws every Plotly figure shipped as JSON in <script type="application/json" data-figure="ID"> next to <div id="ID">.
(function () {
  function draw(root) {
    (root || document).querySelectorAll('script[type="application/json"][data-figure]').forEach(function (s) {
      var el = document.getElementById(s.dataset.figure);
      if (!el || !window.Plotly) return;
      var fig = JSON.parse(s.textContent);
      Plotly.react(el, fig.data || [], fig.layout || {}, Object.assign({ responsive: true, displaylogo: false }, fig.config || {}));
    });
  }
  window.asnDrawFigures = draw;
  document.addEventListener('DOMContentLoaded', function () { draw(document); });
  document.addEventListener('htmx:afterSettle', function (e) { draw(e.target); });
})();
