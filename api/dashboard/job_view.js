// One job: live curves and progress from its event stream, the freeze plan, events, checkpoints, controls.

import { ApiError, call, followEvents, saveDownload } from "./api.js";
import { LineChart } from "./charts.js";
import { count, fromNow, h, showNotice, statusBadge, strategyName, timeOfDay, when } from "./dom.js";
import { freezePlanCard } from "./freeze_plan.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const MAX_EVENTS_SHOWN = 300;
const REDRAW_MS = 250;

export async function showJob({ view, onLeave, signOut }, jobId) {
  let job;
  try {
    job = await call(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return signOut();
    view.replaceChildren(h("h1", {}, "Job not found"), h("p", { class: "form-error" }, error.message), h("a", { href: "#/jobs" }, "Back to jobs"));
    return;
  }

  const header = h("div");
  const controls = h("div", { class: "actions", role: "group", "aria-label": "Job actions" });
  const progressCard = h("section", { class: "card", "aria-labelledby": "progress-heading" });
  const planCard = h("section", { class: "card", id: "freeze-plan", "aria-labelledby": "plan-heading" });
  const lossChartBox = h("section", { class: "card", id: "loss-chart" });
  const metricChartBox = h("section", { class: "card", id: "metric-chart" });
  const eventList = h("ol", { class: "events", id: "event-list", "aria-live": "polite", "aria-relevant": "additions" });
  const checkpointsBody = h("tbody");
  const settingsCard = h("section", { class: "card", "aria-labelledby": "settings-heading" });
  view.replaceChildren(
    header,
    controls,
    h("div", { class: "grid" }, progressCard, planCard),
    h("div", { class: "grid" }, lossChartBox, metricChartBox),
    h(
      "div",
      { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "events-heading" }, h("h2", { id: "events-heading" }, "Events"), eventList),
      h(
        "section",
        { class: "card", "aria-labelledby": "checkpoints-heading" },
        h("h2", { id: "checkpoints-heading" }, "Checkpoints"),
        h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Step", "Epoch", "Metrics"].map((name) => h("th", { scope: "col" }, name)))), checkpointsBody)),
      ),
    ),
    settingsCard,
  );

  const totalSteps = () => (job.progress ? job.progress.total_steps : null);
  const lossChart = new LineChart(lossChartBox, { title: "Loss", yLabel: "loss", totalSteps: totalSteps() });
  const metricChart = new LineChart(metricChartBox, { title: "Validation metrics", yLabel: "score", totalSteps: totalSteps() });
  let live = null; // the latest step event's data: fresher than the job object between polls
  let redrawPending = false;

  function scheduleRedraw() {
    if (redrawPending) return;
    redrawPending = true;
    setTimeout(() => {
      redrawPending = false;
      lossChart.totalSteps = metricChart.totalSteps = totalSteps();
      lossChart.draw();
      metricChart.draw();
      renderProgress();
    }, REDRAW_MS);
  }

  function renderHeader() {
    header.replaceChildren(
      h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
      h("h1", {}, job.id, " ", statusBadge(job.status)),
      h(
        "dl",
        { class: "facts card" },
        h("dt", {}, "Model"), h("dd", { class: "mono" }, job.model),
        h("dt", {}, "Task"), h("dd", {}, job.task),
        h("dt", {}, "Strategy"), h("dd", {}, strategyName(job.strategy)),
        h("dt", {}, "Training file"), h("dd", { class: "mono" }, job.training_file),
        h("dt", {}, "Validation file"), h("dd", { class: "mono" }, job.validation_file || "—"),
        h("dt", {}, "Created"), h("dd", {}, when(job.created_at)),
        h("dt", {}, "Finished"), h("dd", {}, when(job.finished_at)),
        job.fine_tuned_model ? [h("dt", {}, "Fine-tuned model"), h("dd", { class: "mono" }, job.fine_tuned_model)] : null,
        job.error ? [h("dt", {}, "Error"), h("dd", { class: "form-error" }, `${job.error.code}: ${job.error.message}`)] : null,
      ),
    );
  }

  function renderControls() {
    const act = (action) => async () => {
      try {
        job = await call(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/${action}`, { method: "POST" });
        showNotice(`Job ${job.id}: ${action} requested; it is now ${job.status}.`, { ok: true });
        renderAll();
      } catch (error) {
        showNotice(error.message);
      }
    };
    const ended = TERMINAL.has(job.status);
    controls.replaceChildren(h("span", { class: "visually-hidden" }, "Job actions:"), ...[
      h("button", { type: "button", class: "button secondary", disabled: !["queued", "running"].includes(job.status), onclick: act("pause") }, "Pause"),
      h("button", { type: "button", class: "button secondary", disabled: job.status !== "paused", onclick: act("resume") }, "Resume"),
      h("button", { type: "button", class: "button danger", disabled: ended, onclick: act("cancel") }, "Cancel"),
      job.status === "succeeded"
        ? h("button", {
            type: "button",
            class: "button",
            onclick: () => saveDownload(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/weights`, `${job.id}.tar`).catch((error) => showNotice(error.message)),
          }, "Download weights")
        : null,
    ].filter(Boolean));
  }

  function renderProgress() {
    const progress = live || job.progress;
    const percent = job.status === "succeeded" ? 100 : progress ? (100 * progress.step) / Math.max(progress.total_steps, 1) : 0;
    const finish = job.status === "running" ? (live && live.estimated_finish) || job.estimated_finish : null;
    const epochs = job.hyperparameters.n_epochs;
    progressCard.replaceChildren(
      h("h2", { id: "progress-heading" }, "Progress"),
      h("div", { class: "progress" }, h("progress", { id: "job-progress", max: 100, value: percent, "aria-label": "Training progress" }), h("span", {}, `${percent.toFixed(0)}%`)),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Step"), h("dd", { id: "progress-step" }, progress ? `${count(progress.step)} of ${count(progress.total_steps)}` : "not started"),
        h("dt", {}, "Epoch"), h("dd", {}, progress ? `${progress.epoch} of ${epochs}` : "—"),
        h("dt", {}, "Estimated finish"), h("dd", {}, finish ? `${timeOfDay(finish)} (${fromNow(finish)})` : "—"),
        h("dt", {}, "Trainable parameters"),
        h("dd", {}, job.trainable_parameters ? `${count(job.trainable_parameters)} of ${count(job.total_parameters)} (${((100 * job.trainable_parameters) / job.total_parameters).toFixed(1)}%)` : "known once training starts"),
        job.performance && job.performance.samples_per_second ? [h("dt", {}, "Throughput"), h("dd", {}, `${job.performance.samples_per_second} examples/s`)] : null,
      ),
    );
  }

  function renderSettings() {
    const rows = Object.entries(job.hyperparameters).map(([name, value]) => h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "mono" }, value === null ? "—" : typeof value === "object" ? JSON.stringify(value) : String(value))));
    settingsCard.replaceChildren(
      h("h2", { id: "settings-heading" }, "Settings used"),
      h("div", { class: "table-wrap" }, h("table", {}, h("tbody", {}, rows, h("tr", {}, h("th", { scope: "row" }, "strategy"), h("td", { class: "mono" }, JSON.stringify(job.strategy))), h("tr", {}, h("th", { scope: "row" }, "seed"), h("td", { class: "mono" }, String(job.seed)))))),
    );
  }

  function renderAll() {
    renderHeader();
    renderControls();
    renderProgress();
    planCard.replaceChildren(...freezePlanCard(job.freeze_plan));
    renderSettings();
  }

  async function refreshJob() {
    try {
      job = await call(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}`);
      renderAll();
    } catch (error) {
      showNotice(error.message);
    }
  }

  async function refreshCheckpoints() {
    try {
      const listing = await call(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/checkpoints?limit=100`);
      checkpointsBody.replaceChildren(
        ...listing.data.map((checkpoint) => h("tr", {}, h("td", {}, String(checkpoint.step_number)), h("td", {}, String(checkpoint.epoch ?? "—")), h("td", { class: "mono" }, describeMetrics(checkpoint.metrics)))),
      );
      if (listing.data.length === 0) checkpointsBody.append(h("tr", {}, h("td", { colspan: 3, class: "empty" }, "None yet: one is written at the end of each epoch.")));
    } catch (error) {
      showNotice(error.message);
    }
  }

  let refreshTimer = null;
  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      refreshJob();
      refreshCheckpoints();
    }, 300);
  }

  function onEvent(event) {
    const data = event.data || {};
    eventList.prepend(h("li", { class: event.level === "error" ? "error" : null }, h("time", { datetime: new Date(event.created_at * 1000).toISOString() }, timeOfDay(event.created_at)), event.message));
    while (eventList.children.length > MAX_EVENTS_SHOWN) eventList.lastElementChild.remove();
    if (typeof data.train_loss === "number" && typeof data.step === "number") {
      lossChart.add("train loss", "train", data.step, data.train_loss);
      live = { step: data.step, total_steps: data.total_steps, epoch: data.epoch, estimated_finish: data.estimated_finish };
    }
    if (typeof data.epoch === "number" && typeof data.step === "number" && data.train_loss === undefined) {
      for (const [name, value] of Object.entries(data)) {
        if (!name.startsWith("valid_") || typeof value !== "number" || name.includes("threshold")) continue;
        if (name === "valid_loss") lossChart.add("validation loss", "valid", data.step, value);
        else metricChart.add(name.replace(/^valid_/, "validation "), "valid", data.step, value);
      }
    }
    if (data.freeze_plan) {
      job.freeze_plan = data.freeze_plan;
      planCard.replaceChildren(...freezePlanCard(job.freeze_plan));
    }
    if (event.type === "message") refreshSoon();
    scheduleRedraw();
  }

  renderAll();
  refreshCheckpoints();
  const stop = followEvents(job.id, {
    onEvent,
    onEnd: () => refreshSoon(),
    onError: (error) => (error.status === 401 ? signOut() : showNotice(error.message)),
  });
  onLeave(() => {
    stop();
    clearTimeout(refreshTimer);
  });
}

function describeMetrics(metrics) {
  const entries = Object.entries(metrics || {});
  if (entries.length === 0) return "—";
  return entries.map(([name, value]) => `${name} ${typeof value === "number" ? value.toFixed(4) : value}`).join(", ");
}
