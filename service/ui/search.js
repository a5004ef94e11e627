// Search: a query (media or an enrolled tracklet) ranked against the gallery with the filters.
import { postForm } from "./api.js";
import {
  FILTER_NAMES, appendMedia, dropZone, field, filterFields, formValues, formatTime, h, setStatus, showError, tile,
} from "./dom.js";

export async function searchView(container, params) {
  const trackletId = params.get("tracklet") || "";
  const media = dropZone("media", "Query: a video, frames or an archive");
  const results = h("section", { class: "results", "aria-label": "Matches" });
  const form = h("form", { class: "query-form", novalidate: true },
    h("h2", {}, "Search"),
    h("div", { class: "query-source" },
      media.zone,
      field("…or an enrolled tracklet id", h("input", { name: "tracklet_id", type: "text", value: trackletId || null }),
        "its stored embedding is the query (the tracklet itself is left out)")),
    filterFields(Object.fromEntries(params)),
    h("fieldset", { class: "options" }, h("legend", {}, "Ranking"),
      field("Top k", h("input", { name: "top_k", type: "number", min: 1, max: 1000, value: params.get("top_k") || 12 })),
      field("Re-rank (k-reciprocal)", h("input", { name: "rerank", type: "checkbox" })),
      field("One answer per person", h("input", { name: "group_by", type: "checkbox" }))),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const body = new FormData();
    const values = formValues(form, [...FILTER_NAMES, "tracklet_id", "top_k", "rerank", "group_by"]);
    const files = [...media.input.files];
    if (files.length) appendMedia(body, files);
    if (values.tracklet_id && !files.length) {
      body.append("tracklet_id", values.tracklet_id);
      body.append("exclude_query", "true");
    }
    for (const name of [...FILTER_NAMES, "top_k"]) if (values[name] !== undefined) body.append(name, values[name]);
    if (values.rerank) body.append("rerank", "true");
    if (values.group_by) body.append("group_by", "person");
    results.replaceChildren(h("p", { class: "muted" }, "Searching…"));
    setStatus("searching");
    try {
      showResults(results, await postForm("/query", body));
    } catch (error) {
      results.replaceChildren();
      showError(error);
    } finally {
      setStatus("");
    }
  });
  container.append(form, results);
  if (trackletId) form.requestSubmit();
}

export function matchTiles(matches) {
  return h("ol", { class: "grid" }, matches.map((match) => tile(match, [
    ["rank", match.rank],
    ["distance", match.distance.toFixed(4)],
    ["person", match.person_id],
    ["camera", match.camera_id],
    ["time", formatTime(match.start_time, true)],
    ...(match.person_matches ? [["tracklets", match.person_matches]] : []),
  ], "match")));
}

function showResults(results, answer) {
  const summary = `${answer.matches.length} match(es) of ${answer.gallery_size} tracklets`
    + `${answer.reranked ? ", re-ranked" : ""}${answer.group_by ? ", one per person" : ""}`
    + ` in ${answer.took_ms.toFixed(0)} ms`;
  results.replaceChildren(h("p", { class: "summary" }, summary),
    answer.matches.length ? matchTiles(answer.matches) : h("p", {}, "No tracklet passes the filters."));
}
