// Analysis view: token selection, feature cards (htmx), colouring tokens by a feature's activation.
// Loaded by the page and again by each analysis fragment (saved explorations): it sets itself up once.
(function () {
  if (window.asnAnalyze) return;
  var api = (window.asnAnalyze = {});

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function inputs() {
    var a = $('#analysis');
    try { return a ? JSON.parse(a.dataset.inputs || '{}') : {}; } catch (e) { return {}; }
  }

  // ---- token selection
  function select(pos) {
    var panel = document.getElementById('tokpanel-' + pos);
    if (!panel) return;
    $$('.tokpanel').forEach(function (p) { p.hidden = p !== panel; });
    $$('.strip .tok.sel').forEach(function (t) { t.classList.remove('sel'); });
    var tok = document.getElementById('tok-' + pos);
    if (tok) { tok.classList.add('sel'); }
    api.selected = pos;
    markFeature();
  }
  api.select = select;

  function selectDefault() {
    var toks = $$('.strip .tok');
    if (toks.length) select(+toks[toks.length - 1].dataset.pos);
  }

  // ---- feature colouring
  function clearColours() {
    $$('.strip .tok').forEach(function (t) {
      t.style.background = ''; t.classList.remove('on', 'hot'); t.querySelector('.a').textContent = '';
    });
    var note = $('#colour-note'); if (note) note.textContent = '';
  }

  function colour() {
    var card = $('#fcard');
    clearColours();
    markFeature();
    if (!card) return;
    var acts = JSON.parse(card.dataset.acts || '[]');
    var sink = JSON.parse(card.dataset.sink || '[]');
    var max = parseFloat(card.dataset.max) || 0;
    if (!acts.length) return;
    $$('.strip .tok').forEach(function (t) {
      var p = +t.dataset.pos, a = acts[p] || 0;
      if (a <= 0 || max <= 0) return;
      var x = Math.min(1, a / max);
      t.style.background = 'rgba(234, 88, 12, ' + (0.12 + 0.78 * x).toFixed(3) + ')';
      t.classList.add('on'); if (x > 0.6) t.classList.add('hot');
      t.querySelector('.a').textContent = a >= 100 ? a.toFixed(0) : a.toFixed(a >= 10 ? 1 : 2);
    });
    var note = $('#colour-note');
    if (note) note.textContent = 'Coloured by ' + card.dataset.sae + ' #' + card.dataset.index +
      (max > 0 ? ' (0 – ' + max.toFixed(2) + ').' : ': not active on this prompt.');
  }
  api.colour = colour;

  function markFeature() {
    var card = $('#fcard');
    $$('.feat.cur').forEach(function (b) { b.classList.remove('cur'); });
    if (!card) return;
    $$('.feat[data-sae="' + card.dataset.sae + '"][data-index="' + card.dataset.index + '"]').forEach(function (b) { b.classList.add('cur'); });
  }

  function openFeature(sae, index) {
    var vals = {}, inp = inputs();
    Object.keys(inp).forEach(function (k) { if (inp[k] !== null && inp[k] !== undefined) vals[k] = String(inp[k]); });
    vals.sae = sae; vals.index = String(index);
    var slot = $('#feature-card'); if (slot) slot.classList.add('loading');
    return htmx.ajax('POST', '/fragments/feature', { target: '#feature-card', swap: 'innerHTML', values: vals });
  }
  api.openFeature = openFeature;

  document.addEventListener('click', function (e) {
    var tok = e.target.closest('.strip .tok');
    if (tok) { select(+tok.dataset.pos); return; }
    var feat = e.target.closest('button.feat');
    if (feat) { openFeature(feat.dataset.sae, feat.dataset.index); return; }
    if (e.target.closest('#fcard-close')) closeCard();
  });

  function closeCard() {
    var slot = $('#feature-card');
    if (slot) slot.innerHTML = '<p class="muted hint">Click a feature (#index) to see its card here.</p>';
    clearColours(); markFeature();
  }

  document.addEventListener('keydown', function (e) {
    if (e.key === 'Escape' && $('#fcard')) { closeCard(); return; }  // like the card's ✕
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter' && e.target.closest('#analyze-form')) {
      e.preventDefault(); htmx.trigger('#analyze-form', 'submit'); return;
    }
    if (!e.target.closest('#strip') || api.selected === undefined) return;
    if (e.key === 'ArrowRight') { e.preventDefault(); select(api.selected + 1); }
    if (e.key === 'ArrowLeft') { e.preventDefault(); select(api.selected - 1); }
  });

  function init() {
    if ($('#analysis')) { selectDefault(); colour(); }
  }

  document.addEventListener('DOMContentLoaded', function () {
      init();
  });
  document.addEventListener('htmx:afterSettle', function (e) {
    var t = e.target;
    if (!t || !t.closest) return;
    if (t.closest('#feature-card')) { $('#feature-card').classList.remove('loading'); colour(); }
    else if (t.id === 'result' || (t.querySelector && t.querySelector('#analysis'))) { init(); }
  });
  document.addEventListener('htmx:historyRestore', function () {
    $$('[data-figure]').forEach(function (s) { var el = document.getElementById(s.dataset.figure); if (el) el.innerHTML = ''; });
    if (window.asnDrawFigures) window.asnDrawFigures(document);
    init();
  });
  if (document.readyState !== 'loading') init();
})();
