// "Which features drive this token": a token clicked in the analysis strip becomes the position; inside the
// analysis view a feature link opens the card in place (elsewhere the link opens the analysis with the card).
(function () {
  if (window.asnAttribution) return;
  window.asnAttribution = true;
  // typing a target as text picks the "other" choice (a checked chip's id would win over the text)
  document.addEventListener('input', function (e) {
    var box = e.target.closest('.target-picker input[type=text]');
    if (!box) return;
    var other = box.closest('.pick-other').querySelector('input[type=radio]');
    if (other) other.checked = true;
  });
  document.addEventListener('click', function (e) {
    var tok = e.target.closest('.strip .tok');
    if (tok) {
      var pos = document.getElementById('attr-position');
      if (pos) pos.value = tok.dataset.pos;
      return;
    }
    var link = e.target.closest('a.attr-feat');
    if (link && window.asnAnalyze && document.getElementById('analysis') && document.getElementById('feature-card')) {
      e.preventDefault();
      window.asnAnalyze.openFeature(link.dataset.sae, link.dataset.index);
    }
  });
})();
