// Every view: a failed request shows its message in place (replacing stale results), and prompt fields count
// their tokens as the user types. Loaded once by base.html; the handlers are set here and nowhere else.
// (4xx/503 error fragments are swapped by base.html's htmx responseHandling and keep their status; this file
// covers what htmx does not swap: 5xx, network failures, JSON error bodies, and fetch-based requests.)
(function () {
  'use strict';
  if (window.asnForms) return;
  var api = (window.asnForms = {});

  // "field: message" lines of an error answer, worded by the server (app/api/errors.py readable): every JSON error
  // carries them in its X-Error-Lines header. headers: anything with get(name) (fetch's Headers), or an XHR.
  function errorLines(headers, status, text) {
    var h = headers.get ? headers.get('X-Error-Lines') : headers.getResponseHeader('X-Error-Lines');
    try { if (h) return JSON.parse(h); } catch (e) { /* fall through */ }
    return [text && text.length < 300 && !/^\s*[{[]/.test(text) ? text : 'the server answered ' + status];
  }
  api.errorLines = errorLines;

  // Lines from a fetch Response, as a promise.
  api.responseLines = function (r) {
    return r.text().then(function (t) { return errorLines(r.headers, r.status, t); });
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
    e.detail.shouldSwap = false;
    show(htmxTarget(e), errorLines(xhr, xhr.status));
  });
  // What htmx does not swap (5xx, 404 outside the 4.. rule, ...): the message in place.
  document.addEventListener('htmx:responseError', function (e) {
    var xhr = e.detail.xhr, lines = errorLines(xhr, xhr.status);
    if (!xhr.getResponseHeader('X-Error-Lines')) {
      lines = ['the server answered ' + xhr.status + (xhr.statusText ? ' ' + xhr.statusText : '') + '; try again'];
    }
    show(htmxTarget(e), lines);
  });
  document.addEventListener('htmx:sendError', function (e) {
    show(htmxTarget(e), ['the server could not be reached (is it running?); try again']);
  });

  // A view's fragment answered 503 + Retry-After (the model was busy with other users' work, or short of memory):
  // the message is in place; ask again by itself after that many seconds, up to MAX_RETRIES times, counting down in
  // the message. A request the user sends in the meantime cancels the pending one. Only /fragments/ (computations
  // that change nothing), so a refused save is never sent twice behind the user's back.
  var MAX_RETRIES = 3;
  function sentBy(e) { return e.detail.requestConfig && e.detail.requestConfig.triggeringEvent; }
  document.addEventListener('htmx:beforeRequest', function (e) {
    var elt = e.detail.elt;
    if (!elt || elt.__asnRetrying) { if (elt) elt.__asnRetrying = false; return; }
    if (elt.__asnRetry) { clearInterval(elt.__asnRetry); elt.__asnRetry = null; }
    elt.__asnRetries = 0;  // the user asked: a fresh budget of retries
  });
  document.addEventListener('htmx:afterSwap', function (e) {
    // detail.elt is the swap target here; the element that sent the request is requestConfig.elt
    var xhr = e.detail.xhr, elt = (e.detail.requestConfig || {}).elt, path = (e.detail.pathInfo || {}).requestPath || '';
    if (!xhr || xhr.status !== 503 || !elt || path.indexOf('/fragments/') !== 0) return;
    var wait = parseInt(xhr.getResponseHeader('Retry-After') || '', 10), ev = sentBy(e);
    var box = (e.detail.target || e.detail.elt).querySelector('[role=alert]');
    // only what a user's submit or click sent can be sent again the same way (a 'load' trigger does not re-fire)
    if (!(wait > 0) || !box || !ev || (ev.type !== 'submit' && ev.type !== 'click')) return;
    var note = document.createElement('p');
    note.className = 'retry-note muted small';
    box.appendChild(note);
    if ((elt.__asnRetries || 0) >= MAX_RETRIES) {
      note.textContent = 'Still busy after ' + MAX_RETRIES + ' tries; send it again when you like.';
      return;
    }
    elt.__asnRetries = (elt.__asnRetries || 0) + 1;
    var left = wait, type = ev.type;
    var tick = function () {
      if (left > 0) { note.textContent = 'Trying again in ' + left + ' s (' + elt.__asnRetries + ' of ' + MAX_RETRIES + ')'; left -= 1; return; }
      clearInterval(elt.__asnRetry); elt.__asnRetry = null;
      note.textContent = 'Trying again…';
      elt.__asnRetrying = true;
      // as the user sent it: a form's submit through requestSubmit (htmx ignores a synthetic submit event)
      if (type === 'submit' && elt.requestSubmit) elt.requestSubmit(); else htmx.trigger(elt, type);
    };
    if (elt.__asnRetry) clearInterval(elt.__asnRetry);
    tick();
    elt.__asnRetry = setInterval(tick, 1000);
  });

  // ---- Save boxes (templates/fragments/_save.html): an idempotency key made on a form's first submit and kept, so a
  // double-click or a second click saves once and answers the same link (the server derives the id from the key, the
  // browser and the content; another title or note is another save). Capture phase: set before htmx reads the form.
  function randomKey() {
    var b = new Uint8Array(16), s = '';
    (window.crypto || window.msCrypto).getRandomValues(b);  // works on plain http too (randomUUID does not)
    for (var i = 0; i < b.length; i++) s += ('0' + b[i].toString(16)).slice(-2);
    return s;
  }
  document.addEventListener('submit', function (e) {
    var form = e.target;
    if (!form || !form.matches || !form.matches('form.save-box')) return;
    var key = form.querySelector('input[name=save_key]');
    if (key && !key.value) key.value = randomKey();
  }, true);

  // ---- token counter: <span class="tok-count" data-for="ID"> under a prompt field (debounced /api/tokenize)
  function chatValue(form) {
    var c = form && form.querySelector('[name=chat]');
    if (!c) return undefined;
    return c.value === 'on' ? true : c.value === 'off' ? false : null;
  }
  // data-systems (optional, JSON {field name: label}): the system prompts this prompt is run with, one per view; the
  // count is the largest (each is checked against the limit), and says which one gives it
  function counter(span) {
    var field = document.getElementById(span.dataset.for);
    if (!field) return;
    var form = field.form, timer = null, seq = 0;
    var systems = span.dataset.systems ? JSON.parse(span.dataset.systems) : { system_prompt: 'the system prompt' };
    function tokenize(body) {
      return fetch('/api/tokenize', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    }
    function count() {
      var prompt = field.value, mine = ++seq;
      var limit = span.dataset.limit;
      if (!prompt) { span.textContent = '0 / ' + limit + ' tokens'; span.classList.remove('over'); return; }
      var chat = chatValue(form), asks = [];
      Object.keys(systems).forEach(function (name) {
        var sys = form && form.querySelector('[name=' + name + ']');
        if (sys && sys.value) asks.push({ label: systems[name], system: sys.value });
      });
      if (!asks.length) asks.push({ label: null, system: null });
      Promise.all(asks.map(function (a) {
        var body = { prompt: prompt };
        if (a.system) body.system_prompt = a.system;
        if (chat !== undefined && chat !== null) body.chat = chat;
        var nd = form && form.querySelector('[name=no_default_system]');
        if (nd && nd.checked) body.no_default_system = true;
        return tokenize(body);
      })).then(function (rs) {
        if (mine !== seq) return;
        var bad = rs.filter(function (r) { return !r.ok; })[0];
        if (bad) return api.responseLines(bad).then(function (l) { span.textContent = l.join('; '); span.classList.add('over'); });
        return Promise.all(rs.map(function (r) { return r.json(); })).then(function (js) {
          if (mine !== seq) return;
          var k = 0;
          js.forEach(function (j, i) { if (j.n_tokens > js[k].n_tokens) k = i; });
          var j = js[k], over = j.n_tokens > j.limit;
          span.textContent = j.n_tokens.toLocaleString('en') + ' / ' + j.limit.toLocaleString('en') + ' tokens' +
            (Object.keys(systems).length > 1 && asks[k].label ? ' (the most: with ' + asks[k].label + ')' : '') +
            (over ? ' — over the limit: shorten the prompt' : '');
          span.classList.toggle('over', over);
        });
      }).catch(function () { span.textContent = ''; });
    }
    function later() { clearTimeout(timer); timer = setTimeout(count, 250); }
    function relevant(e) { if (e.target === field || e.target.name === 'chat' || e.target.name === 'no_default_system' || e.target.name in systems) later(); }
    (form || field).addEventListener('input', relevant);
    (form || field).addEventListener('change', relevant);
    count();
  }
  function init() { document.querySelectorAll('.tok-count[data-for]').forEach(counter); }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
