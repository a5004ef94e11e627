// The service's public REST API, as the page uses it: one fetch wrapper that adds the API key (kept in
// sessionStorage only), turns every error answer into an ApiError worded as the API worded it, and asks
// for a key when the service answers 401.

const KEY_NAME = "reid-api-key";

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

let keyPrompt = null;

// Shows the key dialog once (concurrent 401s share it); resolves when a key was entered.
function askForKey(problem) {
  if (keyPrompt) return keyPrompt;
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  document.getElementById("key-problem").textContent = problem || "";
  keyPrompt = new Promise((resolve) => {
    form.addEventListener("submit", () => {
      setApiKey(input.value.trim());
      input.value = "";
      keyPrompt = null;
      resolve();
    }, { once: true });
  });
  // Escape would close the dialog with the requests still waiting for a key: keep it open instead.
  dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return keyPrompt;
}

async function errorFrom(response) {
  let code = "http_" + response.status;
  let message = `${response.status} ${response.statusText}`;
  let requestId = response.headers.get("X-Request-ID");
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
      requestId = body.error.request_id || requestId;
    }
  } catch {
    // Not JSON (a proxy's page): keep the status line.
  }
  return new ApiError(response.status, code, message, requestId);
}

// fetch() of an API path; answers the Response of a 2xx, throws ApiError otherwise. A 401 asks for a key
// and retries once it is given.
export async function request(path, { method = "GET", body = undefined, params = undefined } = {}) {
  let url = path;
  if (params) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
    }
    if ([...query].length) url += "?" + query.toString();
  }
  for (;;) {
    const headers = {};
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    const response = await fetch(url, { method, body, headers });
    if (response.status === 401) {
      const error = await errorFrom(response);
      await askForKey(key ? error.message : "");
      continue;
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }
}

export async function getJSON(path, params) {
  return (await request(path, { params })).json();
}

export async function postForm(path, form) {
  return (await request(path, { method: "POST", body: form })).json();
}

export async function remove(path) {
  await request(path, { method: "DELETE" });
}

// An <img> for an API image (thumbnails, frames, overlays need the key, which <img src> cannot send):
// fetched as a blob. A missing image (404) leaves a labelled placeholder.
const objectUrls = new Set();

export function apiImage(path, alt, className = "") {
  const img = document.createElement("img");
  img.alt = alt;
  img.className = className;
  img.decoding = "async";
  request(path).then(async (response) => {
    const url = URL.createObjectURL(await response.blob());
    objectUrls.add(url);
    img.src = url;
  }).catch((error) => {
    img.classList.add("missing");
    img.title = error.message;
  });
  return img;
}

// Frees the blob URLs of the previous view's images.
export function releaseImages() {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls.clear();
}
