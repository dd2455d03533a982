// /docs: Swagger UI from static/swagger-ui/ on this app's OpenAPI (no CDN; the validator badge would call out).
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("swagger-ui");
  if (!el || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({
    url: el.dataset.openapiUrl, dom_id: "#swagger-ui", validatorUrl: null,
    // no deep links: with them each operation's path is a link inside its expand button (nested controls; axe)
    deepLinking: false,
    presets: [window.SwaggerUIBundle.presets.apis], layout: "BaseLayout",
    // Swagger UI titles the API with an h1, each tag with an h3 and "Schemas" with an h4: a screen reader's outline
    // skips levels (axe heading-order); they are the page's sections, level 2. Its own <main> sits inside the
    // page's: a named region instead.
    onComplete: () => {
      el.querySelectorAll("h3.opblock-tag, section.models > h4").forEach((h) => h.setAttribute("aria-level", "2"));
      el.querySelectorAll("main").forEach((m) => { m.setAttribute("role", "region"); m.setAttribute("aria-label", "operations"); });
    },
  });
});
