// Small DOM helpers shared by the views.
import { apiImage } from "./api.js";

// h("a", {href: "#"}, "text", child...): an element; attributes starting with "on" become listeners.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

let fieldCount = 0;

// A labelled form control: <div class="field"><label for=id>text</label><input id=id ...></div>.
export function field(text, control, hint) {
  const id = control.id || `field-${++fieldCount}`;
  control.id = id;
  const hintNode = hint ? h("small", { id: `${id}-hint`, class: "hint" }, hint) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  if (control.type === "checkbox") {
    return h("div", { class: "field check" }, control, h("label", { for: id }, text), hintNode);
  }
  return h("div", { class: "field" }, h("label", { for: id }, text), control, hintNode);
}

export function showError(error) {
  const box = document.getElementById("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  const id = error.requestId ? ` (request ${error.requestId})` : "";
  box.textContent = error.message + id;
  box.hidden = false;
}

export function setStatus(text) {
  document.getElementById("status").textContent = text || "";
}

// Footage without a start time stores seconds from its start: such times fall in the first days of 1970.
const RELATIVE_BEFORE_MS = 10 * 86400 * 1000;

// "2026-05-01T14:00:00Z" -> "2026-05-01 14:00:00 UTC" ("05-01 14:00:00" short, in tiles); "+3.0 s" for
// footage-relative times; null -> "".
export function formatTime(iso, short = false) {
  if (!iso) return "";
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return String(iso);
  if (Math.abs(moment.getTime()) < RELATIVE_BEFORE_MS) return `+${(moment.getTime() / 1000).toFixed(1)} s`;
  const text = moment.toISOString().replace("T", " ").replace(/\.\d+Z$/, "");
  return short ? text.slice(5) : `${text} UTC`;
}

export function tracklet_link(id) {
  return `#/tracklet/${encodeURIComponent(id)}`;
}

// One tile of a result grid: thumbnail and facts, opening the tracklet.
export function tile(item, facts, extraClass = "") {
  const img = apiImage(`/tracklets/${encodeURIComponent(item.id)}/thumbnail`, `Tracklet ${item.id}`, "thumb");
  return h("li", { class: `tile ${extraClass}` },
    h("a", { href: tracklet_link(item.id), "data-tracklet": item.id },
      img,
      h("dl", {}, facts.flatMap(([name, value]) => [h("dt", {}, name),
        h("dd", { title: value ?? null, class: name === "id" ? "clip" : null }, value ?? "—")]))));
}

export function recordFacts(record) {
  return [
    ["person", record.person_id],
    ["camera", record.camera_id],
    ["time", formatTime(record.start_time, true)],
  ];
}

// Reads the form's non-empty text fields named in ``names`` into a FormData or a plain object.
export function formValues(form, names) {
  const values = {};
  for (const name of names) {
    const control = form.elements.namedItem(name);
    if (!control) continue;
    if (control.type === "checkbox") values[name] = control.checked;
    else if (control.value.trim() !== "") values[name] = control.value.trim();
  }
  return values;
}

// Which multipart field a set of picked files goes in: one video, one archive, or frames.
const VIDEO = /\.(mp4|m4v|mov|avi|mkv|webm|mpe?g)$/i;
const ARCHIVE = /\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz|tbz2|txz)$/i;

export function mediaField(files) {
  if (files.length === 1 && VIDEO.test(files[0].name)) return "video";
  if (files.length === 1 && ARCHIVE.test(files[0].name)) return "archive";
  return "frames";
}

// A file input that also accepts files dropped on its box.
export function dropZone(name, labelText, multiple = true, accept = "") {
  const input = h("input", { type: "file", name, multiple, accept: accept || null });
  const summary = h("span", { class: "drop-summary", "aria-live": "polite" }, "or drop files here");
  const wrapper = field(labelText, input);
  const zone = h("div", { class: "drop" }, wrapper, summary);
  const update = () => {
    const names = [...input.files].map((file) => file.name);
    summary.textContent = names.length ? `${names.length} file(s): ${names.slice(0, 4).join(", ")}${names.length > 4 ? "…" : ""}`
      : "or drop files here";
  };
  input.addEventListener("change", update);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    input.files = event.dataTransfer.files;
    update();
  });
  return { zone, input };
}

export function appendMedia(form, files) {
  const name = mediaField(files);
  for (const file of files) form.append(name, file, file.name);
}

export function filterFields(values = {}) {
  const text = (name, placeholder) => h("input", { name, type: "text", placeholder, value: values[name] ?? null });
  // Folded on a phone-sized screen unless a filter is set, so the results are in view.
  const open = window.innerWidth > 640 || FILTER_NAMES.some((name) => values[name]);
  return h("details", { class: "filters", open }, h("summary", {}, "Filters"), h("div", { class: "filter-fields" },
    field("Cameras", text("cameras", "cam1,cam2"), "only these, comma-separated"),
    field("Exclude cameras", text("exclude_cameras", "cam3")),
    field("After", text("after", "2026-05-01T14:00:00Z"), "ISO 8601"),
    field("Before", text("before", "2026-05-01T15:00:00Z"), "ISO 8601"),
    field("Person", text("person_id", "")),
    field("Metadata", text("metadata_filter", '{"site": "gate 3"}'), "JSON object, every key must match")));
}

export const FILTER_NAMES = ["cameras", "exclude_cameras", "after", "before", "person_id", "metadata_filter"];
