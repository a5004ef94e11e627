// The page: a hash router over four views (search, gallery, tracklet, footage). Everything it shows comes
// from the public REST API (api.js).
import { getJSON, releaseImages } from "./api.js";
import { h, setStatus, showError } from "./dom.js";
import { footageView, jobView } from "./footage.js";
import { galleryView } from "./gallery.js";
import { searchView } from "./search.js";
import { trackletView } from "./tracklet.js";

// "#/tracklet/abc?x=1" -> {parts: ["tracklet", "abc"], params: URLSearchParams("x=1")}
function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

let generation = 0;

async function render() {
  const { parts, params } = parseHash();
  const main = document.getElementById("main");
  const current = ++generation;
  // A view that is still loading when the user moves on must not draw over the next one.
  const isCurrent = () => current === generation;
  releaseImages();
  showError(null);
  setStatus("");
  const view = parts[0] || "search";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === (view === "tracklet" ? "gallery" : view)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const container = h("div", { class: `view view-${view}` });
  main.replaceChildren(container);
  try {
    if (view === "search") await searchView(container, params, isCurrent);
    else if (view === "gallery") await galleryView(container, params, isCurrent);
    else if (view === "tracklet" && parts[1]) await trackletView(container, parts[1], isCurrent);
    else if (view === "footage" && parts[1]) await jobView(container, parts[1], isCurrent);
    else if (view === "footage") await footageView(container, params, isCurrent);
    else container.append(h("p", {}, "No such page. ", h("a", { href: "#/search" }, "Search")));
  } catch (error) {
    if (isCurrent()) showError(error);
  }
}

// The header's line about the service (and, when it needs a key, the key dialog at once).
async function showService() {
  try {
    const ready = await getJSON("/readyz");
    document.getElementById("service").textContent =
      `${ready.model_name} · ${ready.gallery_size} tracklets · ${ready.device}`;
  } catch (error) {
    showError(error);
  }
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", () => {
  showService().then(render);
});
