// Every page: the tab title follows the view. After htmx pushes or replaces the address (and after Back), the
// title is "<view> · <prompt> · <page>" from the address, so tabs and history entries say what each one shows.
(function () {
  var VIEWS = { generation: 'Generation', steer: 'Steered vs unsteered', dose: 'Dose-response',
                temperature: 'Temperatures', system_shift: 'System prompt shift' };
  var base = null;

  function strip(title, prompt) {  // the page's own title without the prompt the server put in front
    var head = prompt ? prompt.slice(0, 60) + ' · ' : null;
    return head && title.indexOf(head) === 0 ? title.slice(head.length) : title;
  }

  function follow(path) {  // path: the address htmx just pushed (a view script may rewrite it right after)
    var q = new URL(typeof path === 'string' ? path : location.href, location.href).searchParams;
    var prompt = q.get('prompt'), view = VIEWS[q.get('view')];
    if (base === null) base = strip(document.title, prompt);
    if (!prompt) { document.title = base; return; }
    document.title = (view ? view + ' · ' : '') + prompt.slice(0, 60) + ' · ' + base;
  }

  window.asnFollowTitle = function () { follow(); };  // for views that change the address themselves (history.replaceState)
  ['htmx:pushedIntoHistory', 'htmx:replacedInHistory'].forEach(function (ev) {
    document.addEventListener(ev, function (e) { follow(e.detail && e.detail.path); });
  });
  document.addEventListener('htmx:historyRestore', function () { setTimeout(follow, 0); });
  window.addEventListener('popstate', function () { setTimeout(follow, 0); });
  document.addEventListener('DOMContentLoaded', function () { follow(); });
})();

// Every page: a box that scrolls sideways (a wide table on a phone, the lens grid) can be scrolled from the keyboard.
// Boxes with a link or button inside are reached through it; the others become a tab stop named by their caption or
// the nearest heading (WCAG 2.1.1; axe's scrollable-region-focusable). Checked after every swap and resize.
(function () {
  var FOCUSABLE = 'a[href], button, input, select, textarea, summary, [tabindex]';
  function name(el) {
    var cap = el.querySelector('caption'), h = el.closest('section, .panel, details');
    h = h && h.querySelector('h1, h2, h3, h4, summary');
    return ((cap && cap.textContent) || (h && h.textContent) || 'scrolling box').trim().slice(0, 80);
  }
  function mark() {
    document.querySelectorAll('main *').forEach(function (el) {
      if (el.dataset.scrollFocus === '1') {  // made focusable earlier: undone when it no longer scrolls
        if (el.scrollWidth <= el.clientWidth + 1) { el.removeAttribute('tabindex'); el.removeAttribute('role');
          el.removeAttribute('aria-label'); delete el.dataset.scrollFocus; }
        return;
      }
      if (el.scrollWidth <= el.clientWidth + 1 && el.scrollHeight <= el.clientHeight + 1) return;
      var o = getComputedStyle(el);
      if (!/(auto|scroll)/.test(o.overflowX + o.overflowY) || el.hasAttribute('tabindex') || el.querySelector(FOCUSABLE)) return;
      el.setAttribute('tabindex', '0'); el.setAttribute('role', 'region'); el.setAttribute('aria-label', name(el));
      el.dataset.scrollFocus = '1';
    });
  }
  var t = null;
  function later() { clearTimeout(t); t = setTimeout(mark, 150); }
  document.addEventListener('DOMContentLoaded', mark);
  window.addEventListener('load', later);
  window.addEventListener('resize', later);
  document.addEventListener('htmx:afterSettle', later);
  window.asnMarkScrollers = mark;  // for views that draw after a fetch of their own
})();
