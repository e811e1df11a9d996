// The dashboard's only way to the service: the same HTTP API the SDK uses, with the tenant's key.
// The key lives in sessionStorage (gone when the tab closes), is sent as a bearer header, and never
// appears in a URL.

const KEY_STORAGE = "graft.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The service answered ${status}`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function rememberKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return new ApiError(response.status, body);
}

// A JSON call; throws ApiError with the service's message (which names the field or line at fault).
export async function call(path, { method = "GET", json, headers = {}, signal } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// Checks a key before keeping it: a 401 means the key is wrong or revoked.
export async function checkKey(key) {
  const response = await fetch("/v1/fine_tuning/jobs?limit=1", { headers: { Authorization: `Bearer ${key}` } });
  if (!response.ok) throw await errorOf(response);
}

export async function uploadFile(file) {
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  const response = await fetch("/v1/files", { method: "POST", headers: authHeaders(), body: form });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// The first bytes of a file's content (a Range request), as text.
export async function fileHead(fileId, bytes = 16384) {
  const response = await fetch(`/v1/files/${encodeURIComponent(fileId)}/content`, {
    headers: authHeaders({ Range: `bytes=0-${bytes - 1}` }),
  });
  if (!response.ok) throw await errorOf(response);
  return response.text();
}

// Saves a download under `filename`; the bearer key rules out a plain link, so the body is fetched first.
export async function saveDownload(path, filename) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) throw await errorOf(response);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// Follows a job's event stream (GET …/events?stream=true): calls onEvent(event) for each event, oldest
// first, and onEnd(status) when the job has ended. A dropped connection is reopened with Last-Event-ID,
// so nothing is missed or repeated. Returns a function that stops following.
export function followEvents(jobId, { onEvent, onEnd, onError }) {
  const controller = new AbortController();
  let lastEventId = null;
  let stopped = false;

  async function readOnce() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    const response = await fetch(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events?stream=true`, {
      headers,
      signal: controller.signal,
    });
    if (!response.ok) throw await errorOf(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value.replace(/\r\n?/g, "\n");
      let boundary;
      while ((boundary = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        const message = parseMessage(block);
        if (message === null) continue;
        if (message.event === "end") {
          onEnd(JSON.parse(message.data).status);
          return true;
        }
        if (message.id) lastEventId = message.id;
        onEvent(JSON.parse(message.data));
      }
    }
  }

  (async () => {
    let delay = 1000;
    while (!stopped) {
      try {
        if (await readOnce()) return;
        delay = 1000;
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && error.status < 500) {
          onError(error);
          return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15_000);
    }
  })();

  return () => {
    stopped = true;
    controller.abort();
  };
}

// One SSE message block: null for a comment-only block (a heartbeat).
function parseMessage(block) {
  const message = { event: "message", data: "", id: null };
  let hasData = false;
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      message.data += (hasData ? "\n" : "") + value;
      hasData = true;
    } else if (field === "event") {
      message.event = value;
    } else if (field === "id") {
      message.id = value;
    }
  }
  return hasData ? message : null;
}

// The API's own vocabularies (tasks, strategy types, job statuses), read once from its schema.
let schemaPromise = null;
export function vocabulary() {
  schemaPromise ??= fetch("/openapi.json")
    .then((response) => response.json())
    .then((schema) => {
      const schemas = schema.components.schemas;
      const strategy = schemas.JobCreate.properties.strategy.anyOf.find((option) => option.enum);
      return {
        tasks: schemas.Task.enum,
        strategies: strategy.enum,
        statuses: schemas.JobStatus.enum,
      };
    });
  return schemaPromise;
}
