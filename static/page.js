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
