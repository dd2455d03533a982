// The header's Menu button (templates/base.html): on a phone the pages, search, profile and API link fold behind it
// (app.css); a click or Enter opens and closes it, Escape closes it. Wider screens never show the button.
(function () {
  'use strict';
  if (window.asnMenu) return;
  window.asnMenu = true;
  function set(header, open) {
    header.classList.toggle('open', open);
    header.querySelector('.menu-btn').setAttribute('aria-expanded', open ? 'true' : 'false');
  }
  document.addEventListener('click', function (e) {
    var btn = e.target.closest && e.target.closest('header.top .menu-btn');
    if (btn) set(btn.closest('header.top'), btn.getAttribute('aria-expanded') !== 'true');
  });
  document.addEventListener('keydown', function (e) {
    var header = document.querySelector('header.top.open');
    if (e.key !== 'Escape' || !header) return;
    set(header, false);
    header.querySelector('.menu-btn').focus();
  });
})();
