// One tracklet: its sampled frames, its metadata, its attention overlays (Figure 3 of the paper), search
// with it, delete it.
import { apiImage, getJSON, remove } from "./api.js";
import { formatTime, h, showError } from "./dom.js";

export async function trackletView(container, id, isCurrent) {
  const path = `/tracklets/${encodeURIComponent(id)}`;
  const record = await getJSON(path);
  if (!isCurrent()) return;
  const facts = [
    ["id", record.id], ["person", record.person_id], ["camera", record.camera_id],
    ["start", formatTime(record.start_time)], ["end", formatTime(record.end_time)],
    ["frames", `${record.frames_used} sampled of ${record.frames_decoded}`],
    ["enrolled", formatTime(record.created_at)], ["model", record.model_version],
    ...(record.job_id ? [["footage job", h("a", { href: `#/footage/${encodeURIComponent(record.job_id)}` }, record.job_id)],
      ["footage frames", `${record.frame_start}–${record.frame_end}`]] : []),
    ...Object.entries(record.metadata || {}).map(([key, value]) => [key, JSON.stringify(value)]),
  ];
  const deleteButton = h("button", { type: "button", class: "danger" }, "Delete");
  deleteButton.addEventListener("click", async () => {
    if (!window.confirm(`Delete tracklet ${record.id}? This cannot be undone.`)) return;
    try {
      await remove(path);
      location.hash = "#/gallery";
    } catch (error) {
      showError(error);
    }
  });
  const frames = h("section", { class: "frames", "aria-label": "Sampled frames" }, h("h3", {}, "Sampled frames"));
  const attention = h("section", { class: "attention", "aria-label": "Attention" }, h("h3", {}, "Attention"));
  container.append(
    h("h2", {}, `Tracklet ${record.id}`),
    h("div", { class: "actions" },
      h("a", { class: "button", href: `#/search?tracklet=${encodeURIComponent(record.id)}` }, "Search with this"),
      deleteButton),
    h("div", { class: "tracklet" },
      h("dl", { class: "facts" }, facts.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value ?? "—")])),
      h("div", {}, frames, attention)));
  const [frameList, attentionList] = await Promise.all([
    getJSON(`${path}/frames`).catch((error) => ({ error })),
    getJSON(`${path}/attention`).catch((error) => ({ error })),
  ]);
  if (!isCurrent()) return;
  if (frameList.error || !frameList.count) {
    frames.append(h("p", { class: "muted" }, frameList.error ? frameList.error.message : "No frames are kept for this tracklet."));
  } else {
    frames.append(h("ol", { class: "strip" }, Array.from({ length: frameList.count }, (_, index) =>
      h("li", {}, apiImage(`${path}/frames/${index}`, `Frame ${index + 1} of ${frameList.count}`, "frame")))));
  }
  if (attentionList.error || !attentionList.granularities.length) {
    attention.append(h("p", { class: "muted" },
      attentionList.error ? attentionList.error.message : "The model has no attention outputs."));
  } else {
    attention.append(h("p", { class: "hint" }, "Each granularity's attention over the sampled frames (brighter: more weight), as in Figure 3 of MG-RAFA."),
      ...attentionList.granularities.map((item) => h("figure", {},
        apiImage(`${path}/attention/${item.granularity}`, `${item.name} attention over the frames`, "overlay"),
        h("figcaption", {}, item.name))));
  }
}
