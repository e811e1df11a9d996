// The jobs list: newest first, filtered by status, a page at a time as the API pages, refreshed while shown.

import { ApiError, call, vocabulary } from "./api.js";
import { count, fromNow, h, showNotice, statusBadge, strategyName, when } from "./dom.js";

const PAGE_SIZE = 20;
const REFRESH_MS = 5000;

export async function showJobs({ view, onLeave, signOut }) {
  const { statuses } = await vocabulary();
  const state = { status: sessionStorage.getItem("graft.jobsFilter") || "", cursors: [null] };
  const filter = h(
    "select",
    { id: "status-filter", onchange: () => {
      state.status = filter.value;
      sessionStorage.setItem("graft.jobsFilter", state.status);
      state.cursors = [null];
      load();
    } },
    h("option", { value: "" }, "any status"),
    statuses.map((status) => h("option", { value: status, selected: status === state.status }, status)),
  );
  const body = h("tbody");
  const older = h("button", { type: "button", class: "button secondary", onclick: () => page(+1) }, "Older");
  const newer = h("button", { type: "button", class: "button secondary", onclick: () => page(-1) }, "Newer");
  const summary = h("p", { class: "hint", "aria-live": "polite" });
  view.replaceChildren(
    h("h1", {}, "Fine-tuning jobs"),
    h(
      "div",
      { class: "toolbar" },
      h("div", {}, h("label", { for: "status-filter" }, "Status"), filter),
      h("a", { class: "button", href: "#/new" }, "New job"),
    ),
    h(
      "div",
      { class: "table-wrap card" },
      h(
        "table",
        { id: "jobs-table" },
        h("caption", { class: "visually-hidden" }, "Fine-tuning jobs, newest first"),
        h(
          "thead",
          {},
          h("tr", {}, ["Job", "Status", "Model", "Task", "Strategy", "Progress", "ETA", "Created", "Finished"].map((name) => h("th", { scope: "col" }, name))),
        ),
        body,
      ),
      summary,
      h("div", { class: "pager" }, newer, older),
    ),
  );

  let hasMore = false;
  let timer = null;
  let visible = [];

  function page(direction) {
    if (direction > 0 && hasMore && visible.length) state.cursors.push(visible[visible.length - 1].id);
    if (direction < 0 && state.cursors.length > 1) state.cursors.pop();
    load();
  }

  async function load() {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const after = state.cursors[state.cursors.length - 1];
    if (after) query.set("after", after);
    if (state.status) query.set("status", state.status);
    try {
      const listing = await call(`/v1/fine_tuning/jobs?${query}`);
      visible = listing.data;
      hasMore = listing.has_more;
      render();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return signOut();
      showNotice(error.message);
    }
    timer = setTimeout(load, REFRESH_MS);
  }

  function render() {
    body.replaceChildren(...visible.map(row));
    if (visible.length === 0) {
      body.append(h("tr", {}, h("td", { colspan: 9, class: "empty" }, state.status ? `No ${state.status} jobs.` : "No jobs yet: upload a file, then create a job.")));
    }
    older.disabled = !hasMore;
    newer.disabled = state.cursors.length <= 1;
    summary.textContent = `Page ${state.cursors.length}; ${visible.length} job(s) shown.`;
  }

  onLeave(() => clearTimeout(timer));
  load();
}

function row(job) {
  const progress = job.progress;
  const percent = progress ? progress.percent : job.status === "succeeded" ? 100 : 0;
  return h(
    "tr",
    { "data-job-id": job.id },
    h("td", { class: "id" }, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
    h("td", {}, statusBadge(job.status)),
    h("td", { class: "mono" }, job.model),
    h("td", {}, job.task),
    h("td", {}, strategyName(job.strategy)),
    h(
      "td",
      {},
      h(
        "div",
        { class: "progress" },
        h("progress", { max: 100, value: percent, "aria-label": `${job.id} progress` }),
        h("span", {}, `${Math.round(percent)}%`),
      ),
      progress ? h("div", { class: "hint" }, `step ${count(progress.step)}/${count(progress.total_steps)}`) : null,
    ),
    h("td", {}, job.estimated_finish ? fromNow(job.estimated_finish) : "—"),
    h("td", {}, when(job.created_at)),
    h("td", {}, when(job.finished_at)),
  );
}
