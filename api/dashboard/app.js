// The dashboard's shell: sign-in, navigation, and which view a URL fragment shows.

import { apiKey, checkKey, forgetKey, rememberKey } from "./api.js";
import { clearNotice, h } from "./dom.js";
import { showFiles } from "./files_view.js";
import { showJob } from "./job_view.js";
import { showJobs } from "./jobs_view.js";
import { showNewJob } from "./new_job_view.js";

const view = document.getElementById("view");
let leaveView = () => {};

function showSignIn() {
  document.getElementById("main-nav").hidden = true;
  const error = h("p", { class: "form-error", id: "sign-in-error", role: "alert" });
  const input = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-describedby": "api-key-hint sign-in-error",
  });
  const form = h(
    "form",
    { class: "card sign-in", onsubmit: submit },
    h("h1", {}, "Sign in to Graft"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { class: "hint", id: "api-key-hint" }, "A key from `graft keys create`. It is kept in this tab only."),
    error,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "button" }, "Sign in")),
  );

  async function submit(event) {
    event.preventDefault();
    error.textContent = "";
    const key = input.value.trim();
    try {
      await checkKey(key);
    } catch (failure) {
      error.textContent = failure.message;
      input.focus();
      return;
    }
    rememberKey(key);
    if (!location.hash || location.hash === "#/sign-in") location.hash = "#/jobs";
    else route();
  }

  view.replaceChildren(form);
  input.focus();
}

function markCurrent(section) {
  for (const link of document.querySelectorAll("#main-nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function route() {
  leaveView();
  leaveView = () => {};
  clearNotice();
  if (!apiKey()) {
    showSignIn();
    return;
  }
  document.getElementById("main-nav").hidden = false;
  const [section, id] = location.hash.replace(/^#\/?/, "").split("/");
  const context = { view, onLeave: (stop) => (leaveView = stop), signOut };
  markCurrent(section || "jobs");
  if (section === "jobs" && id) showJob(context, decodeURIComponent(id));
  else if (section === "files") showFiles(context);
  else if (section === "new") showNewJob(context);
  else showJobs(context);
  view.focus({ preventScroll: true });
}

// A 401 from any view (a revoked key, say) comes back here.
function signOut() {
  forgetKey();
  location.hash = "#/sign-in";
  route();
}

document.getElementById("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
