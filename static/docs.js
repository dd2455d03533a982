// /docs: Swagger UI from static/swagger-ui/ on this app's OpenAPI (no CDN; the validator badge would call out).
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("swagger-ui");
  if (!el || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({
    url: el.dataset.openapiUrl, dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis], layout: "BaseLayout",
  });
});
