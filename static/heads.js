// /heads: sort the every-head table by a column (descending; again: ascending). Works after htmx swaps.
(function () {
  if (window.asnHeadsSort) return;  // the fragment may be swapped in many times: one listener
  window.asnHeadsSort = true;
  document.addEventListener('click', function (ev) {
    var th = ev.target.closest && ev.target.closest('table.heads th.sortable');
    if (!th) return;
    var table = th.closest('table'), body = table.tBodies[0], col = +th.dataset.col;
    var desc = !th.classList.contains('sorted') || th.dataset.dir === 'asc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = parseFloat(a.cells[col].textContent), y = parseFloat(b.cells[col].textContent);
      return desc ? y - x : x - y;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll('th.sortable').forEach(function (h) { h.classList.remove('sorted'); });
    th.classList.add('sorted');
    th.dataset.dir = desc ? 'desc' : 'asc';
  });
})();
