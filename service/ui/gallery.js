// Gallery: browse the enrolled tracklets with the search filters, a page at a time; enroll a tracklet.
import { getJSON, postForm } from "./api.js";
import {
  FILTER_NAMES, appendMedia, dropZone, field, filterFields, formValues, h, recordFacts, showError, tile,
} from "./dom.js";

const PAGE = 24;

export async function galleryView(container, params, isCurrent) {
  const offset = Math.max(0, Number.parseInt(params.get("offset") || "0", 10) || 0);
  const filters = Object.fromEntries(FILTER_NAMES.filter((name) => params.get(name)).map((name) => [name, params.get(name)]));
  const form = h("form", { class: "filter-form" }, h("h2", {}, "Gallery"), filterFields(filters),
    h("button", { type: "submit" }, "Apply filters"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams(formValues(form, FILTER_NAMES));
    location.hash = `#/gallery?${query}`;
  });
  const list = h("section", { class: "results", "aria-label": "Tracklets" }, h("p", { class: "muted" }, "Loading…"));
  container.append(form, list, enrollForm());
  const page = await getJSON("/tracklets", { ...filters, offset, limit: PAGE });
  if (!isCurrent()) return;
  const link = (newOffset, text) => {
    const query = new URLSearchParams({ ...filters, offset: newOffset });
    return h("a", { class: "button", href: `#/gallery?${query}` }, text);
  };
  const last = Math.min(offset + page.items.length, page.total);
  list.replaceChildren(
    h("p", { class: "summary" }, page.total ? `Tracklets ${offset + 1}–${last} of ${page.total}` : "No tracklet passes the filters."),
    h("ul", { class: "grid" }, page.items.map((record) => tile(record, [["id", record.id], ...recordFacts(record)]))),
    h("nav", { class: "pager", "aria-label": "Pages" },
      offset > 0 ? link(Math.max(0, offset - PAGE), "← Previous") : null,
      last < page.total ? link(offset + PAGE, "Next →") : null));
}

function enrollForm() {
  const media = dropZone("media", "Tracklet: a video, frames or an archive");
  const text = (name, placeholder = "") => h("input", { name, type: "text", placeholder });
  const result = h("p", { class: "summary", "aria-live": "polite" });
  const form = h("form", { class: "enroll-form" },
    h("h2", {}, "Enroll a tracklet"), media.zone,
    h("div", { class: "row" },
      field("Person id", text("person_id")),
      field("Camera id", text("camera_id")),
      field("Tracklet id", text("tracklet_id", "generated when empty"))),
    h("div", { class: "row" },
      field("Start time", text("start_time", "2026-05-01T14:00:00Z"), "ISO 8601"),
      field("End time", text("end_time", "2026-05-01T14:00:05Z"), "ISO 8601"),
      field("Metadata", text("metadata", '{"site": "gate 3"}'), "JSON object")),
    h("button", { type: "submit" }, "Enroll"), result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const body = new FormData();
    appendMedia(body, [...media.input.files]);
    for (const [name, value] of Object.entries(formValues(form, [
      "person_id", "camera_id", "tracklet_id", "start_time", "end_time", "metadata"]))) body.append(name, value);
    result.textContent = "Enrolling…";
    try {
      const record = await postForm("/tracklets", body);
      result.replaceChildren("Enrolled ", h("a", { href: `#/tracklet/${encodeURIComponent(record.id)}` }, record.id), ".");
    } catch (error) {
      result.textContent = "";
      showError(error);
    }
  });
  return form;
}
