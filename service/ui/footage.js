// Footage: upload a camera's video as a job, watch its progress (polling GET /jobs/{id}), see the
// tracklets it enrolled or, in query mode, each tracklet's matches.
import { getJSON, postForm, remove } from "./api.js";
import { field, formatTime, h, recordFacts, setStatus, showError, tile } from "./dom.js";
import { matchTiles } from "./search.js";

const POLL_MS = 1000;
const FINISHED = new Set(["done", "failed", "cancelled"]);

export async function footageView(container, params, isCurrent) {
  const video = h("input", { type: "file", name: "video", accept: "video/*,.mp4,.avi,.mkv,.webm", required: true });
  const text = (name, placeholder = "") => h("input", { name, type: "text", placeholder });
  const mode = h("select", { name: "mode" }, h("option", { value: "enroll" }, "enroll: add its people to the gallery"),
    h("option", { value: "query" }, "query: search the gallery for its people"));
  const form = h("form", { class: "footage-form" }, h("h2", {}, "Footage"),
    field("Video", video),
    h("div", { class: "row" },
      field("Camera id", text("camera_id", "cam-a")),
      field("Start time", text("start_time", "2026-05-01T14:00:00Z"), "ISO 8601 time of the first frame (optional)"),
      field("Mode", mode),
      field("Matches per tracklet", h("input", { name: "top_k", type: "number", min: 1, max: 1000, value: 5 }))),
    h("button", { type: "submit" }, "Upload"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const body = new FormData();
    for (const name of ["camera_id", "start_time", "mode", "top_k"]) {
      const value = form.elements.namedItem(name).value.trim();
      if (value) body.append(name, value);
    }
    if (video.files.length) body.append("video", video.files[0], video.files[0].name);
    setStatus("uploading");
    try {
      const job = await postForm("/footage", body);
      location.hash = `#/footage/${encodeURIComponent(job.job_id)}`;
    } catch (error) {
      showError(error);
    } finally {
      setStatus("");
    }
  });
  const jobs = h("section", { class: "jobs", "aria-label": "Recent jobs" }, h("h3", {}, "Recent jobs"));
  container.append(form, jobs);
  const page = await getJSON("/jobs", { limit: 20 });
  if (!isCurrent()) return;
  jobs.append(page.items.length ? h("table", {},
    h("thead", {}, h("tr", {}, ["job", "camera", "mode", "status", "tracklets", "uploaded"].map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, page.items.map((job) => h("tr", {},
      h("td", {}, h("a", { href: `#/footage/${encodeURIComponent(job.job_id)}` }, job.video.name)),
      h("td", {}, job.camera_id), h("td", {}, job.mode), h("td", {}, job.status),
      h("td", {}, job.progress.tracklets), h("td", {}, formatTime(job.created_at)))))) : h("p", { class: "muted" }, "No jobs yet."));
}

export async function jobView(container, id, isCurrent) {
  const path = `/jobs/${encodeURIComponent(id)}`;
  const title = h("h2", {}, `Footage job ${id}`);
  const progress = h("progress", { id: "job-progress", max: 1, value: 0 });
  const state = h("p", { class: "summary", "aria-live": "polite" });
  const cancel = h("button", { type: "button", class: "danger" }, "Cancel job");
  cancel.addEventListener("click", async () => {
    try {
      await remove(path);
    } catch (error) {
      showError(error);
    }
  });
  const produced = h("section", { class: "results", "aria-label": "Tracklets of the footage" });
  container.append(title, h("div", { class: "field" }, h("label", { for: "job-progress" }, "Progress"), progress), state,
    h("div", { class: "actions" }, cancel), produced);
  for (;;) {
    const job = await getJSON(path);
    if (!isCurrent()) return;
    const { frames_processed: done, frames_total: total, tracklets, fps } = job.progress;
    progress.max = total || Math.max(done, 1);
    progress.value = FINISHED.has(job.status) && job.status === "done" ? progress.max : done;
    state.textContent = `${job.status}: ${done}${total ? ` of ${total}` : ""} frames, ${tracklets} tracklet(s)`
      + `${fps ? `, ${fps.toFixed(1)} frames/s` : ""}${job.error ? ` — ${job.error}` : ""}`
      + `${job.warnings.length ? ` (${job.warnings.join("; ")})` : ""}`;
    title.textContent = `Footage job: ${job.video.name} (${job.camera_id}, ${job.mode})`;
    cancel.hidden = FINISHED.has(job.status);
    showProduced(produced, job);
    if (FINISHED.has(job.status)) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (!isCurrent()) return;
  }
}

function showProduced(produced, job) {
  // Redrawn only when the job produced more, so thumbnails are not fetched again at every poll.
  const count = String((job.result.queries || job.result.tracklets || []).length);
  if (produced.dataset.count === count) return;
  produced.dataset.count = count;
  if (job.mode === "query") {
    const queries = job.result.queries || [];
    produced.replaceChildren(h("h3", {}, `Tracklets searched (${queries.length})`),
      ...queries.map((item) => h("article", { class: "footage-query" },
        h("h4", {}, `Track ${item.track_id}, frames ${item.frame_start}–${item.frame_end}`),
        item.matches.length ? matchTiles(item.matches) : h("p", { class: "muted" }, "No match."))));
    return;
  }
  const records = job.result.tracklets || [];
  produced.replaceChildren(h("h3", {}, `Tracklets enrolled (${records.length})`),
    h("ul", { class: "grid" }, records.map((record) => tile(record, [["id", record.id], ...recordFacts(record)]))));
}
