// Generate & steer / Temperature pages: feature rows with sliders, SSE streaming with a real Stop, address sync.
(function () {
  'use strict';
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  var form = $('#gen-form') || $('#temp-form');
  if (!form) return;
  var rows = $('#feature-rows');
  var maxStrength = parseFloat(form.dataset.maxStrength || '500');

  // After an htmx request the server pushes the address of what it computed (HX-Push-Url, view= included).

  function changed() { form.dispatchEvent(new CustomEvent('steer-change', { bubbles: true })); }

  function featureInfo(row) {
    var idx = $('.f-index', row).value, sae = $('select[name=f_sae]', row).value;
    var prompt = form.querySelector('[name=prompt]').value;
    var info = $('.f-info', row);
    if (idx === '' || !prompt) { info.textContent = ''; return; }
    fetch('/api/steer/feature', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: prompt, sae: sae, index: parseInt(idx, 10) }) })
      .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j, r: r }; }); })
      .then(function (res) {
        if (!res.ok) { info.textContent = window.asnForms ? window.asnForms.errorLines(res.r.headers, res.r.status).join('; ') : 'error'; return; }
        var j = res.j, sl = $('.f-slider', row), num = $('.f-value', row);
        sl.min = j.slider_min.toFixed(2); sl.max = j.slider_max.toFixed(2);
        sl.step = Math.max((j.slider_max - j.slider_min) / 200, 0.01).toFixed(3);
        sl.value = num.value;  // the new range may now hold the typed value (or pin it: rangeHint says so)
        rangeHint(row);
        info.textContent = 'max on prompt ' + j.max_on_prompt.toFixed(2) + ' · scale ' + j.typical_max.toFixed(2) +
          ' · promotes ' + j.promoted.map(function (p) { return JSON.stringify(p.token); }).join(' ');
        info.title = j.source;
      }).catch(function () { info.textContent = 'the server could not be reached; try again'; });
  }

  // A strength the slider cannot show pins the slider at its end: say so next to it.
  function rangeHint(row, clampedFrom) {
    var sl = $('.f-slider', row), num = $('.f-value', row), hint = $('.f-hint', row);
    if (!hint) {
      hint = document.createElement('span'); hint.className = 'f-hint'; hint.setAttribute('role', 'status');
      num.insertAdjacentElement('afterend', hint);
    }
    var v = parseFloat(num.value) || 0, lo = parseFloat(sl.min), hi = parseFloat(sl.max), msg = '';
    if (clampedFrom !== undefined) msg = clampedFrom + ' is beyond the strength limit ±' + maxStrength + ': set to ' + v + '. ';
    if (v < lo || v > hi) msg += v + ' is beyond the slider\'s range (' + lo + ' … ' + hi + '): the slider is pinned at its end; the number box is what is used.';
    hint.textContent = msg;
    hint.hidden = !msg;
  }

  function wire(row) {
    var sl = $('.f-slider', row), num = $('.f-value', row);
    sl.addEventListener('input', function () { num.value = sl.value; rangeHint(row); });
    sl.addEventListener('change', function () { num.value = sl.value; rangeHint(row); changed(); });
    num.addEventListener('change', function () {
      var typed = parseFloat(num.value) || 0, v = Math.max(-maxStrength, Math.min(maxStrength, typed));
      num.value = v; sl.value = v; rangeHint(row, v !== typed ? typed : undefined); changed();
    });
    $('.f-index', row).addEventListener('change', function () { featureInfo(row); });
    $('select[name=f_sae]', row).addEventListener('change', function () { featureInfo(row); });
    $('select[name=f_mode]', row).addEventListener('change', changed);
    $('.f-remove', row).addEventListener('click', function () { row.remove(); changed(); });
    rangeHint(row);
    featureInfo(row);
  }
  $all('.frow', rows).forEach(wire);
  var add = $('#add-feature');
  if (add) add.addEventListener('click', function () {
    var node = $('#feature-row-tpl').content.firstElementChild.cloneNode(true);
    rows.appendChild(node); wire(node); $('.f-index', node).focus();
  });

  // The address that reproduces a view and its tab title are the server's (htmx applies HX-Push-Url and the
  // fragment's <title> for the forms; the stream's answer carries both, the title percent-encoded); no address rule
  // or view name lives here.
  function followAddress(r) {
    var url = r.headers.get('HX-Push-Url'), title = r.headers.get('X-Tab-Title');
    if (!url) return;
    history.replaceState(null, '', url);
    if (title) document.title = decodeURIComponent(title);
  }

  // ---- streaming generation (SSE over fetch; Stop cancels on the server and closes the stream)
  var streamBtn = $('#stream-btn'), stopBtn = $('#stop-btn');
  if (!streamBtn) return;
  var ctrl = null, runId = null;
  function done(msg) { $('#stream-status').textContent = msg; stopBtn.disabled = true; streamBtn.disabled = false; ctrl = null; runId = null; }
  streamBtn.addEventListener('click', function () {
    var out = $('#stream-out'), status = $('#stream-status');
    $('#stream-section').hidden = false; out.textContent = ''; status.textContent = 'starting…'; $('#stream-save').innerHTML = '';
    var links = $('#stream-links'); if (links) links.remove();
    streamBtn.disabled = true; stopBtn.disabled = false;
    ctrl = new AbortController();
    // the form as it is: the server reads it with the generation codec, as it reads the Generate button's form
    fetch('/fragments/generation/stream', { method: 'POST', body: new URLSearchParams(new FormData(form)), signal: ctrl.signal })
      .then(function (r) {
        if (r.ok) followAddress(r);
        if (!r.ok) return window.asnForms.responseLines(r).then(function (lines) {
          window.asnForms.show(out, lines, 'Could not generate'); done('');
        });
        var reader = r.body.getReader(), dec = new TextDecoder(), buf = '', n = 0;
        function handle(block) {
          var ev = 'message', data = '';
          block.split('\n').forEach(function (line) {
            if (line.indexOf('event: ') === 0) ev = line.slice(7); else if (line.indexOf('data: ') === 0) data += line.slice(6);
          });
          if (!data) return;
          var d = JSON.parse(data);
          if (ev === 'start') { runId = d.run_id; status.textContent = 'generating…'; }
          else if (ev === 'token') { var s = document.createElement('span'); s.className = 'gtok'; s.textContent = d.text; s.title = 'p=' + d.prob.toFixed(4); out.appendChild(s); n++; status.textContent = n + ' tokens…'; }
          else if (ev === 'save') { var box = $('#stream-save'); box.innerHTML = d.html; htmx.process(box); }  // server-rendered, escaped
          else if (ev === 'links') { out.insertAdjacentHTML('afterend', d.html); }  // "open in Analyze", server-rendered
          else if (ev === 'done') { var g = d.generation; done(g.n_new + ' tokens · ' + g.finish_reason + ' · ' + (g.tokens_per_s || 0).toFixed(1) + ' tok/s'); }
          else if (ev === 'error') { window.asnForms.show(out, [String(d.detail)], 'Generation stopped with an error'); done(''); }
        }
        function pump() {
          return reader.read().then(function (res) {
            if (res.done) { if (ctrl) done(n + ' tokens · stopped'); return; }
            buf += dec.decode(res.value, { stream: true });
            var i;
            while ((i = buf.indexOf('\n\n')) >= 0) { handle(buf.slice(0, i)); buf = buf.slice(i + 2); }
            return pump();
          });
        }
        return pump();
      })
      .catch(function (e) {
        if (e.name === 'AbortError') { done($('#stream-out').childNodes.length + ' tokens · stopped'); return; }
        window.asnForms.show(out, ['the server could not be reached (is it running?); try again'], 'Could not generate'); done('');
      });
  });
  stopBtn.addEventListener('click', function () {
    var id = runId, c = ctrl;
    if (id) fetch('/api/generate/cancel/' + encodeURIComponent(id), { method: 'POST' }).catch(function () {});
    if (c) c.abort();
  });
})();
