// The attention panel of the analysis view: draws every head's pattern (bytes from app/viz/attention.py) on its
// canvas, enlarges the head clicked, and shades the tokens a hovered / focused token attends to.
(function () {
  var END = [8, 48, 107];  // weight 1; weight 0 is white

  function decode(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  function paint(canvas, bytes, offset, n, row) {
    var ctx = canvas.getContext('2d'), img = ctx.createImageData(n, n), d = img.data;
    for (var i = 0; i < n * n; i++) {
      var t = bytes[offset + i] / 255, j = 4 * i;
      d[j] = 255 + (END[0] - 255) * t; d[j + 1] = 255 + (END[1] - 255) * t; d[j + 2] = 255 + (END[2] - 255) * t;
      d[j + 3] = 255;
      if (row != null && Math.floor(i / n) === row && t < 0.5) { d[j] = 255; d[j + 1] = 236; d[j + 2] = 160; }
    }
    ctx.putImageData(img, 0, 0);
  }

  function setUp(root) {
    if (root.dataset.drawn) return;
    root.dataset.drawn = '1';
    var data = JSON.parse(root.querySelector('.attn-data').textContent);
    var n = data.size, bytes = decode(data.patterns), H = data.heads;
    var offset = function (l, h) { return (l * H + h) * n * n; };
    root.querySelectorAll('.attn-cell canvas').forEach(function (c) {
      var b = c.parentNode;
      paint(c, bytes, offset(+b.dataset.layer, +b.dataset.head), n);
    });
    var big = root.querySelector('.attn-big'), title = root.querySelector('.attn-title');
    var read = root.querySelector('.attn-read'), toks = root.querySelectorAll('.attn-tok');
    var cur = null;

    function show(q) {  // shade the strip by where token q attends in the enlarged head
      toks.forEach(function (t) { t.classList.remove('q', 'heat'); t.style.removeProperty('--heat'); t.removeAttribute('title'); });
      if (!cur || q == null) return;
      var o = offset(cur.l, cur.h) + q * n, best = [];
      toks.forEach(function (t, k) {
        var w = bytes[o + k] / 255;
        t.classList.add('heat');
        t.style.setProperty('--heat', w.toFixed(3));
        t.title = k <= q ? 'weight ' + w.toFixed(2) : 'after the query: not attended';
        if (k <= q) best.push([w, k]);
      });
      toks[q].classList.add('q');
      best.sort(function (a, b) { return b[0] - a[0]; });
      read.textContent = 'L' + cur.l + 'H' + cur.h + ': "' + data.tokens[q] + '" (position ' + q + ') attends to ' +
        best.slice(0, 3).map(function (x) { return '"' + data.tokens[x[1]] + '" ' + x[0].toFixed(2); }).join(', ');
      paint(big, bytes, offset(cur.l, cur.h), n, q);
    }

    function open(l, h) {
      cur = {l: l, h: h};
      var cell = data.cells[l][h];
      title.textContent = 'Layer ' + l + ', head ' + h + ' · DLA ' + (cell.dla >= 0 ? '+' : '') + cell.dla.toFixed(3);
      root.querySelectorAll('.attn-cell.on').forEach(function (b) { b.classList.remove('on'); b.setAttribute('aria-pressed', 'false'); });
      var b = root.querySelector('.attn-cell[data-layer="' + l + '"][data-head="' + h + '"]');
      if (b) { b.classList.add('on'); b.setAttribute('aria-pressed', 'true'); }
      paint(big, bytes, offset(l, h), n);
      root.classList.add('zoomed');
      show(n - 1);
    }

    root.addEventListener('click', function (e) {
      var b = e.target.closest('.attn-cell, .attn-go');
      if (b) {
        open(+b.dataset.layer, +b.dataset.head);
        var z = root.querySelector('.attn-zoom');  // stacked under the grid on a phone: bring it into view
        if (window.innerWidth < 900 && z.scrollIntoView) z.scrollIntoView({block: 'nearest'});
      }
      var t = e.target.closest('.attn-tok');
      if (t) show(+t.dataset.pos);
    });
    var hover = function (e) {
      var t = e.target.closest && e.target.closest('.attn-tok');
      if (t) show(+t.dataset.pos);
    };
    root.addEventListener('mouseover', hover);
    root.addEventListener('focusin', hover);
    big.addEventListener('mousemove', function (e) {
      var r = big.getBoundingClientRect(), q = Math.floor((e.clientY - r.top) / r.height * n);
      if (q >= 0 && q < n) show(q);
    });
    var first = data.cells.length ? [0, 0] : null, best = -1;
    data.cells.forEach(function (row, l) { row.forEach(function (c, h) { if (Math.abs(c.dla) > best) { best = Math.abs(c.dla); first = [l, h]; } }); });
    if (first) open(first[0], first[1]);  // the head with the largest |DLA| starts enlarged
  }

  function drawAll() { document.querySelectorAll('[data-attn]').forEach(setUp); }
  drawAll();
  if (!window.asnAttention) {
    window.asnAttention = true;
    document.addEventListener('htmx:afterSettle', drawAll);
  }
})();
