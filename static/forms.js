// Every view: a failed request shows its message in place (replacing stale results), and prompt fields count
// their tokens as the user types. Loaded once by base.html; the handlers are set here and nowhere else.
// (4xx/503 error fragments are swapped by base.html's htmx responseHandling and keep their status; this file
// covers what htmx does not swap: 5xx, network failures, JSON error bodies, and fetch-based requests.)
(function () {
  'use strict';
  if (window.asnForms) return;
  var api = (window.asnForms = {});

  // "field: message" lines from a FastAPI error body ({detail: [...]} or {detail: "text"}), in plain words.
  function detailLines(body, status) {
    var d = body && body.detail;
    if (Array.isArray(d)) {
      return d.map(function (x) {
        var loc = (x.loc || []).slice(), msg = String(x.msg || '').replace(/^Value error, /, '');
        if (['body', 'query', 'path', 'form'].indexOf(loc[0]) >= 0) loc.shift();
        if (x.type === 'missing' || (x.type === 'string_too_short' && x.ctx && x.ctx.min_length === 1)) msg = 'required: it is empty';
        return (loc.join('.') || 'input') + ': ' + msg;
      });
    }
    if (d) return [String(d)];
    return ['the server answered ' + status];
  }
  api.detailLines = detailLines;

  // Lines from a fetch Response (JSON or text), as a promise.
  api.responseLines = function (r) {
    return r.text().then(function (t) {
      try { return detailLines(JSON.parse(t), r.status); } catch (e) { return [t && t.length < 300 ? t : 'the server answered ' + r.status]; }
    });
  };

  // Put an error box into `target` (an element), replacing what was there (stale results must not stay).
  function show(target, lines, title) {
    if (!target) return;
    var box = document.createElement('div');
    box.className = 'errors panel';
    box.setAttribute('role', 'alert');
    var b = document.createElement('b');
    b.textContent = title || 'Could not run this';
    var ul = document.createElement('ul');
    lines.forEach(function (l) { var li = document.createElement('li'); li.textContent = l; ul.appendChild(li); });
    box.appendChild(b); box.appendChild(ul);
    target.replaceChildren(box);
  }
  api.show = show;

  function htmxTarget(e) {
    var d = e.detail || {};
    return d.target || (d.requestConfig && d.requestConfig.target) || d.elt;
  }
  function isJson(xhr) { return /json/.test(xhr.getResponseHeader('Content-Type') || ''); }

  // 4xx answered as JSON (an API-style error from a route): swap readable lines instead of raw JSON.
  document.addEventListener('htmx:beforeSwap', function (e) {
    var xhr = e.detail.xhr;
    if (!xhr || xhr.status < 400 || !e.detail.shouldSwap || !isJson(xhr)) return;
    var lines;
    try { lines = detailLines(JSON.parse(xhr.responseText), xhr.status); } catch (err) { lines = ['the server answered ' + xhr.status]; }
    e.detail.shouldSwap = false;
    show(htmxTarget(e), lines);
  });
  // What htmx does not swap (5xx, 404 outside the 4.. rule, ...): the message in place.
  document.addEventListener('htmx:responseError', function (e) {
    var xhr = e.detail.xhr, lines;
    try { lines = detailLines(JSON.parse(xhr.responseText), xhr.status); } catch (err) {
      lines = ['the server answered ' + xhr.status + (xhr.statusText ? ' ' + xhr.statusText : '') + '; try again'];
    }
    show(htmxTarget(e), lines);
  });
  document.addEventListener('htmx:sendError', function (e) {
    show(htmxTarget(e), ['the server could not be reached (is it running?); try again']);
  });

  // ---- token counter: <span class="tok-count" data-for="ID"> under a prompt field (debounced /api/tokenize)
  function chatValue(form) {
    var c = form && form.querySelector('[name=chat]');
    if (!c) return undefined;
    return c.value === 'on' ? true : c.value === 'off' ? false : null;
  }
  function counter(span) {
    var field = document.getElementById(span.dataset.for);
    if (!field) return;
    var form = field.form, timer = null, seq = 0;
    function count() {
      var prompt = field.value, mine = ++seq;
      var limit = span.dataset.limit;
      if (!prompt) { span.textContent = '0 / ' + limit + ' tokens'; span.classList.remove('over'); return; }
      var body = { prompt: prompt }, sys = form && form.querySelector('[name=system_prompt]'), chat = chatValue(form);
      if (sys && sys.value) body.system_prompt = sys.value;
      if (chat !== undefined && chat !== null) body.chat = chat;
      fetch('/api/tokenize', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
        .then(function (r) {
          if (mine !== seq) return;
          if (!r.ok) return api.responseLines(r).then(function (l) { span.textContent = l.join('; '); span.classList.add('over'); });
          return r.json().then(function (j) {
            var over = j.n_tokens > j.limit;
            span.textContent = j.n_tokens.toLocaleString('en') + ' / ' + j.limit.toLocaleString('en') + ' tokens' +
              (over ? ' — over the limit: shorten the prompt' : '');
            span.classList.toggle('over', over);
          });
        }).catch(function () { span.textContent = ''; });
    }
    function later() { clearTimeout(timer); timer = setTimeout(count, 250); }
    function relevant(e) { if (e.target === field || ['system_prompt', 'chat'].indexOf(e.target.name) >= 0) later(); }
    (form || field).addEventListener('input', relevant);
    (form || field).addEventListener('change', relevant);
    count();
  }
  function init() { document.querySelectorAll('.tok-count[data-for]').forEach(counter); }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
