// Files: upload (validated by the service, its line-numbered errors shown as they are), list, preview, delete.

import { ApiError, call, fileHead, uploadFile } from "./api.js";
import { bytes, count, h, showNotice, when } from "./dom.js";

const PREVIEW_ROWS = 5;

export async function showFiles({ view, signOut }) {
  const input = h("input", { id: "upload-file", name: "file", type: "file", accept: ".jsonl,.csv,.json", required: true, "aria-describedby": "upload-hint upload-error" });
  const error = h("p", { class: "form-error", id: "upload-error", role: "alert" });
  const button = h("button", { type: "submit", class: "button" }, "Upload");
  const body = h("tbody");
  const details = h("section", { class: "card", id: "file-details", hidden: true, "aria-live": "polite" });
  view.replaceChildren(
    h("h1", {}, "Files"),
    h(
      "form",
      { class: "card", id: "upload-form", onsubmit: upload },
      h("h2", {}, "Upload a training or validation file"),
      h("label", { for: "upload-file" }, "File (JSONL or CSV)"),
      input,
      h("p", { class: "hint", id: "upload-hint" }, "Checked line by line as it arrives: a bad line is named in the error, and nothing is kept."),
      error,
      h("div", { class: "actions" }, button),
    ),
    details,
    h(
      "div",
      { class: "card table-wrap" },
      h(
        "table",
        { id: "files-table" },
        h("caption", { class: "visually-hidden" }, "Your files, newest first"),
        h("thead", {}, h("tr", {}, ["File", "Name", "Records", "Tasks", "Size", "Uploaded", "Actions"].map((name) => h("th", { scope: "col" }, name)))),
        body,
      ),
    ),
  );

  async function upload(event) {
    event.preventDefault();
    error.textContent = "";
    const file = input.files[0];
    if (!file) return;
    button.disabled = true;
    button.textContent = "Uploading…";
    try {
      const created = await uploadFile(file);
      showNotice(`Uploaded ${created.filename} as ${created.id}: ${created.record_count} records.`, { ok: true });
      input.value = "";
      await load();
    } catch (failure) {
      if (failure instanceof ApiError && failure.status === 401) return signOut();
      error.textContent = failure.message;
    } finally {
      button.disabled = false;
      button.textContent = "Upload";
    }
  }

  async function load() {
    try {
      const listing = await call("/v1/files?limit=100");
      body.replaceChildren(...listing.data.map(row));
      if (listing.data.length === 0) body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No files yet.")));
    } catch (failure) {
      if (failure instanceof ApiError && failure.status === 401) return signOut();
      showNotice(failure.message);
    }
  }

  function row(file) {
    return h(
      "tr",
      { "data-file-id": file.id },
      h("td", { class: "id" }, file.id),
      h("td", {}, file.filename),
      h("td", {}, count(file.record_count)),
      h("td", {}, Object.keys(file.task_summaries || {}).join(", ") || "—"),
      h("td", {}, bytes(file.bytes)),
      h("td", {}, when(file.created_at)),
      h(
        "td",
        {},
        h("div", { class: "actions" },
          h("button", { type: "button", class: "button secondary", onclick: () => preview(file), "aria-label": `Preview ${file.filename}` }, "Preview"),
          h("button", { type: "button", class: "button danger", onclick: () => remove(file), "aria-label": `Delete ${file.filename}` }, "Delete"),
        ),
      ),
    );
  }

  async function preview(file) {
    details.hidden = false;
    details.replaceChildren(h("h2", {}, `${file.filename} (${file.id})`), h("p", { class: "hint" }, "Loading…"));
    let head = "";
    try {
      head = await fileHead(file.id);
    } catch (failure) {
      details.replaceChildren(h("p", { class: "form-error" }, failure.message));
      return;
    }
    const lines = head.split("\n").slice(0, PREVIEW_ROWS).filter((line) => line.trim() !== "");
    const shown = lines.map((line) => {
      try {
        return JSON.stringify(JSON.parse(line));
      } catch {
        return line; // CSV, or a line cut at the end of the range
      }
    });
    details.replaceChildren(
      h("h2", {}, `${file.filename} (${file.id})`),
      h("h3", {}, `First ${shown.length} rows`),
      h("pre", { class: "preview", id: "file-preview" }, shown.join("\n")),
      ...distributions(file),
      h("div", { class: "actions" }, h("button", { type: "button", class: "button secondary", onclick: () => (details.hidden = true) }, "Close")),
    );
    details.scrollIntoView({ block: "nearest" });
  }

  async function remove(file) {
    if (!confirm(`Delete ${file.filename} (${file.id})? Jobs that used it keep their results.`)) return;
    try {
      await call(`/v1/files/${encodeURIComponent(file.id)}`, { method: "DELETE" });
      showNotice(`Deleted ${file.filename}.`, { ok: true });
      details.hidden = true;
      await load();
    } catch (failure) {
      showNotice(failure.message);
    }
  }

  await load();
}

// Every count table a task's summary holds (examples per label, per tag, answerable or not) as bars.
function distributions(file) {
  const sections = [];
  for (const [task, summary] of Object.entries(file.task_summaries || {})) {
    for (const [name, counts] of Object.entries(summary)) {
      if (!name.endsWith("_counts") || typeof counts !== "object" || counts === null) continue;
      const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
      const largest = Math.max(1, ...entries.map((entry) => entry[1]));
      sections.push(
        h("h3", {}, `${task}: ${name.replace(/_counts$/, "").replace(/_/g, " ")} distribution`),
        h(
          "ul",
          { class: "bars", "data-distribution": `${task}.${name}` },
          entries.map(([label, value]) =>
            h("li", {}, h("span", { class: "mono" }, label), h("span", { class: "bar", style: `width:${(100 * value) / largest}%`, "aria-hidden": "true" }), h("span", { class: "count" }, count(value))),
          ),
        ),
      );
    }
  }
  return sections;
}
