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

  // the token where the open feature peaks (a deep link or a saved analysis with a card), else the last one
  function selectDefault() {
    var toks = $$('.strip .tok'), card = $('#fcard'), peak = card ? card.dataset.maxPos : '';
    if (peak && document.getElementById('tok-' + peak)) select(+peak);
    else if (toks.length) select(+toks[toks.length - 1].dataset.pos);
  }

  // Back / Forward: htmx restores the page's HTML but not what the boxes held; refill the form from the inputs
  // of the analysis shown, so the next Analyze asks for what is on screen.
  function restoreForm() {
    // Without an analysis on screen the restored HTML's own values stand: the server rendered the form from the
    // address (its codec), so no address rule lives here.
    var form = $('#analyze-form');
    if (!form || !$('#analysis')) return;
    var v = inputs();
    form.elements.prompt.value = v.prompt || '';
    form.elements.system_prompt.value = v.system_prompt || '';
    if (v.system_prompt) form.elements.system_prompt.closest('details').open = true;
    form.elements.chat.value = v.chat === true ? 'on' : v.chat === false ? 'off' : 'auto';
    form.elements.top_k.value = v.top_k || 10;
    if (form.elements.rank) form.elements.rank.value = v.rank || 'unusual';
    var nd = form.querySelector('input[type=checkbox][name=no_default_system]');
    if (nd) nd.checked = !!v.no_default_system;
    form.querySelector('input[type=checkbox][name=include_sinks]').checked = !!v.include_sinks;
    form.querySelector('input[type=checkbox][name=lens]').checked = v.lens !== false;
    if (form.elements.lens_kind) form.elements.lens_kind.value = v.lens_kind === 'tuned' ? 'tuned' : 'logit';
  }

  // ---- feature colouring
  function clearColours() {
    $$('.strip .tok').forEach(function (t) {
      t.style.removeProperty('--heat'); t.classList.remove('on', 'heat', 'sinkact'); t.querySelector('.a').textContent = '';
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
    var max = parseFloat(card.dataset.max) || 0, withSinks = card.dataset.includeSinks === '1', nSink = 0;
    if (!acts.length) return;
    $$('.strip .tok').forEach(function (t) {
      var p = +t.dataset.pos, a = acts[p] || 0;
      if (a <= 0) return;
      if (sink[p] && !withSinks) {  // outside the scale (max leaves sinks out): outlined, never a full-scale fill
        t.classList.add('sinkact'); nSink++;
        t.querySelector('.a').textContent = a >= 100 ? a.toFixed(0) : a.toFixed(a >= 10 ? 1 : 2);
        t.title = t.title.replace(/ · activation .*$/, '') + ' · activation ' + a.toFixed(2) + ' (sink: outside the colour scale)';
        return;
      }
      if (max <= 0) return;
      var x = Math.min(1, a / max);
      t.style.setProperty('--heat', (0.12 + 0.78 * x).toFixed(3)); // text colour by the shade: app.css .heat
      t.classList.add('on', 'heat');
      t.querySelector('.a').textContent = a >= 100 ? a.toFixed(0) : a.toFixed(a >= 10 ? 1 : 2);
    });
    var note = $('#colour-note');
    if (note) note.textContent = 'Coloured by ' + (card.dataset.name || card.dataset.sae + ' ' + card.dataset.index) +
      (max > 0 ? ' (0 – ' + max.toFixed(2) + ').' : ': not active on this prompt.') +
      (nSink ? ' Outlined: sink positions, left out of the scale.' : '');
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
    var slot = $('#feature-card'), save = $('#analysis .save-slot');
    if (slot) slot.innerHTML = '<p class="muted hint">Click a feature (#index) to see its card here.</p>';
    if (save && plainSave !== null) { save.innerHTML = plainSave; htmx.process(save); }  // Save without the card again
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
    else if (t.id === 'result' || (t.querySelector && t.querySelector('#analysis'))) { plainSave = null; init(); }
  });
  // The analysis' Save box comes again with each card (feature in its inputs, card in its result). One without a
  // feature arriving late (the deferred lens) must not replace the open card's; it is kept for when the card closes.
  var plainSave = null;
  function featureIn(root) {
    var field = root && root.querySelector && root.querySelector('input[name=inputs]');
    try { return field ? JSON.parse(field.value).feature || null : null; } catch (err) { return null; }
  }
  document.addEventListener('htmx:oobBeforeSwap', function (e) {
    var d = e.detail;
    if (!d.target || !d.target.classList || !d.target.classList.contains('save-slot') || !d.fragment) return;
    if (featureIn(d.fragment)) {
      if (!featureIn(d.target)) plainSave = d.target.innerHTML;
      return;
    }
    var box = document.createElement('div');
    box.appendChild(d.fragment.cloneNode(true));
    plainSave = box.innerHTML;
    if ($('#fcard')) d.shouldSwap = false;
  });
  document.addEventListener('htmx:historyRestore', function () {
    restoreForm();
    $$('[data-figure]').forEach(function (s) { var el = document.getElementById(s.dataset.figure); if (el) el.innerHTML = ''; });
    if (window.asnDrawFigures) window.asnDrawFigures(document);
    init();
  });
  if (document.readyState !== 'loading') init();
})();
