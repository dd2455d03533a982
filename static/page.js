// Every page: the tab title is the server's (a view's codec, app/web/codecs.py): the page's <title>, a fragment's
// <title> (htmx sets document.title from it, and restores it from its history cache after Back).

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
