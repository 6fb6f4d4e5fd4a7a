// About: the server's version and model, where the API docs are, and the licences of the vendored scripts.
import { ErrorBox, html, useApi } from "../lib/ui.js";

export default function About({ server }) {
  const lock = useApi("static/vendor/vendor.lock.json");
  const packages = lock.data ? Object.entries(lock.data.packages) : [];
  return html`<div class="page about">
    <h1>About pictale</h1>
    <p>pictale ${server.version}, serving <strong>${server.model || "no model"}</strong>.</p>
    <p>
      The API this page uses is documented at <a href="docs">/docs</a> (Swagger UI). The same routes serve
      AUTOMATIC1111 clients (<code>/sdapi/v1</code>) and OpenAI clients (<code>/v1/images</code>).
    </p>
    <h2>Third-party code in this page</h2>
    <${ErrorBox} error=${lock.error} />
    <table>
      <thead><tr><th scope="col">Package</th><th scope="col">Licence</th><th scope="col">Files</th></tr></thead>
      <tbody>
        ${packages.map(
          ([spec, p]) => html`<tr>
            <td>${spec}</td>
            <td>${p.license}</td>
            <td>
              <ul class="files">
                ${Object.keys(p.files).map((f) => html`<li><a href=${`static/vendor/${f}`}>${f}</a></li>`)}
              </ul>
            </td>
          </tr>`,
        )}
      </tbody>
    </table>
  </div>`;
}
