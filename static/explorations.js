// Saved explorations pages: "Copy link" (no inline scripts: the CSP allows only this origin's files).
(function () {
  "use strict";
  if (window.ASN_EXPLORATIONS) return;
  window.ASN_EXPLORATIONS = true;
  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest && ev.target.closest("button.copy-link");
    if (!btn) return;
    var url = btn.getAttribute("data-copy");
    var done = function () { btn.textContent = "Link copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(url).then(done, function () { window.prompt("Copy this link", url); });
    } else {
      window.prompt("Copy this link", url);
    }
  });
  // The share box after a Save: select the whole link on focus.
  document.addEventListener("focusin", function (ev) {
    if (ev.target.classList && ev.target.classList.contains("saved-url")) ev.target.select();
  });
})();
