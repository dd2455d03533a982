// /discover: show the paste box when a set is "pasted / uploaded", read uploaded files into it, sort tables.
(function () {
  function toggleCustom(root) {
    (root || document).querySelectorAll('select.set-choice').forEach(function (sel) {
      var box = document.querySelector('.custom[data-side="' + sel.dataset.side + '"]');
      if (box) box.hidden = sel.value !== 'custom';
    });
  }
  document.addEventListener('change', function (e) {
    var t = e.target;
    if (t.matches && t.matches('select.set-choice')) toggleCustom();
    if (t.matches && t.matches('input.upload') && t.files && t.files[0]) {
      var side = t.dataset.side, reader = new FileReader();
      reader.onload = function () {
        var ta = document.querySelector('textarea[name="' + side + '_text"]');
        if (ta) ta.value = String(reader.result);
        var sel = document.querySelector('select[name="' + side + '_set"]');
        if (sel) { sel.value = 'custom'; toggleCustom(); }
      };
      reader.readAsText(t.files[0]);
    }
  });
  // Sortable tables: click a header; numbers sort by data-v, text by content.
  document.addEventListener('click', function (e) {
    var th = e.target.closest && e.target.closest('table.sortable th');
    if (!th) return;
    var table = th.closest('table'), idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var num = th.dataset.type === 'num';
    var desc = th.getAttribute('aria-sort') !== 'descending';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var ca = a.cells[idx], cb = b.cells[idx];
      if (!ca || !cb) return 0;
      var va = num ? parseFloat(ca.dataset.v) : ca.textContent, vb = num ? parseFloat(cb.dataset.v) : cb.textContent;
      var r = num ? va - vb : String(va).localeCompare(String(vb));
      return desc ? -r : r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
  document.addEventListener('DOMContentLoaded', function () { toggleCustom(); });
})();
