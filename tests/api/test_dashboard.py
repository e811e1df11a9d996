"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against `graft api` and a real worker.

Set GRAFT_DASHBOARD_SCREENSHOTS to a folder to keep a screenshot of each page there (docs/screenshots
holds the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from models.services import catalog
from models.settings import Settings
from models.storage.database import close_engine, session_scope
from tests.conftest import TINY_BERT_ID, jsonl_bytes, make_tenant_key
from tests.live_api import LiveApi, running_api
from tests.processes import running_worker, wait_for
from tests.worker.training.conftest import sentiment_rows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)
SCREENSHOTS = os.environ.get("GRAFT_DASHBOARD_SCREENSHOTS")
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 375, "height": 800}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def dashboard_settings(template_database: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One service for the module's tests (each signs in as a tenant of its own): starting it is the slow part."""
    data_dir = tmp_path_factory.mktemp("dashboard") / "var"
    data_dir.mkdir()
    shutil.copy(template_database, data_dir / "graft.db")
    configured = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'graft.db'}",
        broker_url=f"sqla+sqlite:///{data_dir / 'broker.db'}",
        max_upload_bytes=5 * 1024 * 1024,
        heartbeat_seconds=0.5,
        lease_seconds=30,
        stop_grace_seconds=10.0,
        tenant_max_active_jobs=1000,
        sweep_interval_seconds=0.5,
    )
    yield configured
    close_engine(configured.database_url)


@pytest.fixture(scope="module")
def tiny_bert(dashboard_settings: Settings, tiny_bert_folder: Path) -> str:
    with session_scope(dashboard_settings.database_url) as session:
        catalog.register_base_model(session, TINY_BERT_ID, str(tiny_bert_folder))
    return TINY_BERT_ID


@pytest.fixture(scope="module")
def service(dashboard_settings: Settings, tiny_bert: str) -> Iterator[LiveApi]:
    logs = dashboard_settings.data_dir.parent
    with (
        running_worker(dashboard_settings, logs / "worker.log"),
        running_api(dashboard_settings, logs / "api.log") as api,
    ):
        yield api


@pytest.fixture
def key(dashboard_settings: Settings) -> str:
    return make_tenant_key(dashboard_settings, f"dashboard-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def page(browser: Browser, service: LiveApi) -> Iterator[Page]:
    context = browser.new_context(base_url=service.base_url, viewport=WIDE, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("dialog", lambda dialog: dialog.accept())
    yield opened
    context.close()
    assert errors == [], f"the page raised: {errors}"


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def sign_in(page: Page, key: str) -> None:
    page.goto("/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Fine-tuning jobs")).to_be_visible()


def api_client(service: LiveApi, key: str) -> httpx.Client:
    return httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def create_job(service: LiveApi, key: str, model: str, **body: Any) -> str:
    with api_client(service, key) as http:
        training = http.post(
            "/v1/files", files={"file": ("train.jsonl", jsonl_bytes(sentiment_rows(96)))}, data={"purpose": "fine-tune"}
        ).json()["id"]
        response = http.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": training, **body})
        assert response.status_code == 200, response.text
        job_id: str = response.json()["id"]
        return job_id


def job_status(service: LiveApi, key: str, job_id: str) -> str:
    with api_client(service, key) as http:
        status: str = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"]
        return status


def test_a_wrong_key_is_refused_and_a_right_one_signs_in_by_keyboard_alone(page: Page, key: str) -> None:
    page.goto("/")
    field = page.get_by_label("API key")
    field.fill("sk-graft-not-a-real-key")
    field.press("Enter")
    expect(page.locator("#sign-in-error")).to_contain_text("API key")
    assert page.evaluate("sessionStorage.length") == 0

    field.fill(key)
    field.press("Enter")

    expect(page.get_by_role("heading", name="Fine-tuning jobs")).to_be_visible()
    assert key not in page.url
    screenshot(page, "sign-in")


def test_files_page_uploads_shows_a_bad_files_line_previews_and_deletes(page: Page, key: str, tmp_path: Path) -> None:
    sign_in(page, key)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Files").click()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n', encoding="utf-8")
    page.get_by_label("File (JSONL or CSV)").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-error")).to_contain_text("line 2")

    good = tmp_path / "sst2.jsonl"
    good.write_bytes(jsonl_bytes(sentiment_rows(40)))
    page.get_by_label("File (JSONL or CSV)").set_input_files(str(good))
    page.get_by_role("button", name="Upload").click()
    row = page.locator("#files-table tr", has_text="sst2.jsonl")
    expect(row).to_contain_text("40")
    row.get_by_role("button", name="Preview sst2.jsonl").click()
    expect(page.locator("#file-preview")).to_contain_text('"label"')
    expect(page.locator("[data-distribution='text-classification.label_counts'] li")).to_have_count(2)
    screenshot(page, "files")

    row.get_by_role("button", name="Delete sst2.jsonl").click()
    expect(page.locator("#files-table tr", has_text="sst2.jsonl")).to_have_count(0)


def test_new_job_form_shows_the_defaults_then_the_job_page_draws_live_curves_and_the_freeze_plan(
    page: Page, key: str, service: LiveApi, tiny_bert: str
) -> None:
    with api_client(service, key) as http:
        upload = http.post(
            "/v1/files", files={"file": ("train.jsonl", jsonl_bytes(sentiment_rows(96)))}, data={"purpose": "fine-tune"}
        ).json()
        validation = http.post(
            "/v1/files", files={"file": ("valid.jsonl", jsonl_bytes(sentiment_rows(16)))}, data={"purpose": "fine-tune"}
        ).json()
    sign_in(page, key)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New job").click()
    page.get_by_label("Training file").select_option(upload["id"])
    page.get_by_label("Validation file").select_option(validation["id"])
    page.get_by_label("Base model").select_option(tiny_bert)
    page.get_by_label("Strategy").select_option("partial")
    page.get_by_label("Epochs").fill("40")
    page.get_by_label("Batch size").fill("4")
    preview = page.locator("#job-preview")
    expect(preview.locator("[data-setting='n_epochs'] td")).to_have_text("40")
    expect(preview.locator("[data-setting='learning_rate'] td")).not_to_be_empty()
    expect(preview.locator("[data-setting='strategy'] td")).to_contain_text('"trainable_layers"')
    screenshot(page, "new-job")
    page.get_by_role("button", name="Create job").click()

    expect(page.locator("h1")).to_contain_text("ftjob-")
    chart = page.locator("#loss-chart figure")
    wait_for(lambda: int(chart.get_attribute("data-points") or 0) >= 2, timeout=60, what="two points on the curve")
    first = int(chart.get_attribute("data-points") or 0)
    wait_for(lambda: int(chart.get_attribute("data-points") or 0) > first, timeout=30, what="the curve to gain a point")
    plan = page.locator("#freeze-plan li")
    expect(plan.first).to_have_attribute("data-state", "new")  # the head, drawn on top
    expect(page.locator("#freeze-plan li[data-unit='embeddings']")).to_have_attribute("data-state", "frozen")
    expect(page.locator("#freeze-plan li[data-unit='layer 1']")).to_have_attribute("data-state", "trainable")
    expect(page.locator("#progress-step")).to_contain_text(" of ")
    expect(page.locator("#event-list li").first).to_be_visible()
    if SCREENSHOTS:  # a picture with a few epochs of curves in it
        metrics = page.locator("#metric-chart figure")
        wait_for(lambda: int(metrics.get_attribute("data-points") or 0) >= 6, timeout=180, what="three epochs")
    screenshot(page, "job")

    job_id = page.locator("h1").inner_text().split()[0]
    page.get_by_role("button", name="Pause").click()
    wait_for(lambda: job_status(service, key, job_id) == "paused", timeout=60, what="the job to pause")
    page.reload()
    page.get_by_role("button", name="Resume").click()
    wait_for(lambda: job_status(service, key, job_id) in ("queued", "running"), timeout=30, what="the resume")
    page.get_by_role("button", name="Cancel").click()
    wait_for(lambda: job_status(service, key, job_id) == "cancelled", timeout=30, what="the cancel")
    expect(page.locator("h1 .status")).to_have_text("cancelled", timeout=15_000)


def test_jobs_list_filters_by_status_and_a_succeeded_jobs_weights_download(
    page: Page, key: str, service: LiveApi, tiny_bert: str, tmp_path: Path
) -> None:
    done = create_job(service, key, tiny_bert, hyperparameters={"n_epochs": 1, "batch_size": 16})
    cancelled = create_job(service, key, tiny_bert, hyperparameters={"n_epochs": 100, "batch_size": 4})
    with api_client(service, key) as http:
        http.post(f"/v1/fine_tuning/jobs/{cancelled}/cancel")
    wait_for(lambda: job_status(service, key, done) == "succeeded", timeout=120, what="the short job to succeed")
    sign_in(page, key)
    expect(page.locator(f"tr[data-job-id='{done}']")).to_contain_text("succeeded")
    page.get_by_label("Status").select_option("cancelled")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
    expect(page.locator(f"tr[data-job-id='{cancelled}']")).to_be_visible()
    page.get_by_label("Status").select_option("")
    screenshot(page, "jobs")

    page.get_by_role("link", name=done).click()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download weights").click()
    saved = tmp_path / "weights.tar"
    download.value.save_as(saved)
    listing = subprocess.run(["tar", "-tf", str(saved)], capture_output=True, text=True, check=True).stdout
    assert "config.json" in listing and "model.safetensors" in listing


def test_pages_fit_a_narrow_screen_and_text_keeps_its_contrast(
    page: Page, key: str, service: LiveApi, tiny_bert: str
) -> None:
    job_id = create_job(service, key, tiny_bert, hyperparameters={"n_epochs": 1, "batch_size": 16})
    wait_for(lambda: job_status(service, key, job_id) == "succeeded", timeout=120, what="the job to succeed")
    page.set_viewport_size(NARROW)
    sign_in(page, key)
    for fragment in ("#/jobs", f"#/jobs/{job_id}", "#/files", "#/new"):
        page.goto(f"/{fragment}")
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{fragment} is {overflow}px wider than a 375px screen"
    page.goto(f"/#/jobs/{job_id}")
    expect(page.locator("#freeze-plan li").first).to_be_visible()
    screenshot(page, "job-narrow")
    ratios = page.evaluate(CONTRAST_OF_TEXT, "button, a, .status, .unit, th, td, label, .hint, h1, h2")
    low = [ratio for ratio in ratios if ratio["ratio"] < 4.5]
    assert low == [], f"text below 4.5:1 contrast: {json.dumps(low[:5])}"


# The WCAG contrast ratio of each element's text against the nearest background colour behind it.
CONTRAST_OF_TEXT = """
(selector) => {
  const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const rgba = (text) => text.match(/[\\d.]+/g).map(Number);
  const background = (node) => {
    for (; node; node = node.parentElement) {
      const colour = rgba(getComputedStyle(node).backgroundColor);
      if (colour.length < 4 || colour[3] > 0) return colour;
    }
    return [255, 255, 255];
  };
  return [...document.querySelectorAll(selector)]
    .filter((node) => node.offsetParent !== null && node.textContent.trim() && !node.disabled)
    .map((node) => {
      const a = luminance(rgba(getComputedStyle(node).color));
      const b = luminance(background(node));
      return { text: node.textContent.trim().slice(0, 30), ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05) };
    });
}
"""
