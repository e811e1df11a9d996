// The new-job form: file, model, task and strategy, with the settings the service would use shown before submitting
// (POST /v1/fine_tuning/jobs/preview resolves every "auto" exactly as creation would).

import { ApiError, call, vocabulary } from "./api.js";
import { count, bytes, h, showNotice } from "./dom.js";

const PREVIEW_DELAY_MS = 300;

export async function showNewJob({ view, signOut }) {
  let files;
  let models;
  let words;
  try {
    [files, models, words] = await Promise.all([call("/v1/files?limit=100"), call("/v1/models"), vocabulary()]);
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 401) return signOut();
    showNotice(failure.message);
    return;
  }
  const usable = files.data.filter((file) => file.status === "processed" && file.purpose === "fine-tune");
  const baseModels = models.data.filter((model) => !model.fine_tuning_job_id);
  const field = (id, label, control, hint = null) => [
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
  ];
  const fileOptions = (withNone) => [
    withNone ? h("option", { value: "" }, "none") : null,
    usable.map((file) => h("option", { value: file.id }, `${file.filename} — ${file.id} (${count(file.record_count)} records)`)),
  ];
  const training = h("select", { id: "training-file", name: "training_file", required: true }, fileOptions(false));
  const validation = h("select", { id: "validation-file", name: "validation_file" }, fileOptions(true));
  const model = h("select", { id: "model", name: "model" }, baseModels.map((item) => h("option", { value: item.id }, item.id)));
  const task = h("select", { id: "task", name: "task" }, words.tasks.map((name) => h("option", { value: name }, name)));
  const strategy = h("select", { id: "strategy", name: "strategy" }, words.strategies.map((name) => h("option", { value: name, selected: name === "full" }, name)));
  const epochs = h("input", { id: "n-epochs", name: "n_epochs", type: "number", min: 1, max: 100, placeholder: "auto", "aria-describedby": "n-epochs-hint" });
  const batchSize = h("input", { id: "batch-size", name: "batch_size", type: "number", min: 1, max: 1024, placeholder: "auto" });
  const multiplier = h("input", { id: "lr-multiplier", name: "learning_rate_multiplier", type: "number", min: 0.01, max: 100, step: "any", placeholder: "auto" });
  const suffix = h("input", { id: "suffix", name: "suffix", type: "text", maxlength: 64, placeholder: "optional" });
  const error = h("p", { class: "form-error", id: "new-job-error", role: "alert" });
  const previewBox = h("section", { class: "card", id: "job-preview", "aria-live": "polite", "aria-labelledby": "preview-heading" });
  const submit = h("button", { type: "submit", class: "button" }, "Create job");

  if (usable.length === 0) {
    view.replaceChildren(h("h1", {}, "New fine-tuning job"), h("p", {}, "Upload a training file first: ", h("a", { href: "#/files" }, "Files"), "."));
    return;
  }

  view.replaceChildren(
    h("h1", {}, "New fine-tuning job"),
    h(
      "div",
      { class: "grid" },
      h(
        "form",
        { class: "card", id: "new-job-form", onsubmit: create, oninput: previewSoon, onchange: previewSoon },
        field("training-file", "Training file", training),
        field("validation-file", "Validation file", validation, "Optional; with one, every epoch is scored and the curves show it."),
        field("model", "Base model", model),
        field("task", "Task", task),
        field("strategy", "Strategy", strategy, "What adapts: feature_extraction trains the head only; full trains everything."),
        field("n-epochs", "Epochs", epochs, "Leave empty for the service's measured default."),
        field("batch-size", "Batch size", batchSize),
        field("lr-multiplier", "Learning-rate multiplier", multiplier),
        field("suffix", "Suffix of the fine-tuned model's name", suffix),
        error,
        h("div", { class: "actions" }, submit),
      ),
      previewBox,
    ),
  );

  function body() {
    const hyperparameters = {};
    if (epochs.value) hyperparameters.n_epochs = Number.parseInt(epochs.value, 10);
    if (batchSize.value) hyperparameters.batch_size = Number.parseInt(batchSize.value, 10);
    if (multiplier.value) hyperparameters.learning_rate_multiplier = Number.parseFloat(multiplier.value);
    const request = { training_file: training.value, model: model.value, task: task.value, strategy: strategy.value };
    if (validation.value) request.validation_file = validation.value;
    if (suffix.value) request.suffix = suffix.value;
    if (Object.keys(hyperparameters).length) request.hyperparameters = hyperparameters;
    return request;
  }

  let timer = null;
  let shown = 0;
  function previewSoon() {
    clearTimeout(timer);
    timer = setTimeout(preview, PREVIEW_DELAY_MS);
  }

  async function preview() {
    const asked = ++shown;
    try {
      const resolved = await call("/v1/fine_tuning/jobs/preview", { method: "POST", json: body() });
      if (asked !== shown) return;
      error.textContent = "";
      renderPreview(resolved);
    } catch (failure) {
      if (asked !== shown) return;
      previewBox.replaceChildren(h("h2", { id: "preview-heading" }, "Settings the job would use"), h("p", { class: "form-error" }, failure.message));
    }
  }

  function renderPreview(resolved) {
    const rows = Object.entries(resolved.hyperparameters)
      .filter(([, value]) => value !== null)
      .map(([name, value]) => h("tr", { "data-setting": name }, h("th", { scope: "row" }, name), h("td", { class: "mono" }, typeof value === "object" ? JSON.stringify(value) : String(value))));
    previewBox.replaceChildren(
      h("h2", { id: "preview-heading" }, "Settings the job would use"),
      h("div", { class: "table-wrap" }, h("table", {}, h("tbody", {},
        rows,
        h("tr", { "data-setting": "strategy" }, h("th", { scope: "row" }, "strategy"), h("td", { class: "mono" }, JSON.stringify(resolved.strategy))),
        h("tr", {}, h("th", { scope: "row" }, "labels"), h("td", {}, resolved.labels.length ? resolved.labels.join(", ") : "—")),
        h("tr", {}, h("th", { scope: "row" }, "trainable parameters"), h("td", {}, resolved.trainable_parameters ? `${count(resolved.trainable_parameters)} of ${count(resolved.total_parameters)}` : "—")),
        h("tr", {}, h("th", { scope: "row" }, "peak storage"), h("td", {}, resolved.estimated_stored_bytes ? bytes(resolved.estimated_stored_bytes) : "—")),
      ))),
    );
  }

  async function create(event) {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      const job = await call("/v1/fine_tuning/jobs", { method: "POST", json: body() });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (failure) {
      if (failure instanceof ApiError && failure.status === 401) return signOut();
      error.textContent = failure.param ? `${failure.message}` : failure.message;
    } finally {
      submit.disabled = false;
    }
  }

  preview();
}
