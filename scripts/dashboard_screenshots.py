"""Screenshots of the dashboard's pages against a running service, for the README (docs/screenshots).

    .venv/bin/python scripts/dashboard_screenshots.py --base-url http://127.0.0.1:8000 --api-key sk-graft-... \\
        --job ftjob-... --file file-... --out docs/screenshots

Drives Debian's Chromium (`apt-get install chromium`) through Playwright. `--job` is the job whose
page is shown (one that is training, so its curves grow), `--file` the file previewed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}


def signed_in(page: Page, api_key: str) -> None:
    page.goto("/")
    page.evaluate(f"sessionStorage.setItem('graft.apiKey', {json.dumps(api_key)})")


def capture(page: Page, fragment: str, path: Path, *, settle_seconds: float = 1.5) -> None:
    page.goto(f"/{fragment}")
    page.wait_for_load_state("networkidle")
    time.sleep(settle_seconds)  # the event stream's history is drawn
    page.screenshot(path=str(path), full_page=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(base_url=args.base_url, viewport=WIDE)
        page.goto("/")
        page.screenshot(path=str(args.out / "sign-in.png"))
        signed_in(page, args.api_key)
        capture(page, "#/jobs", args.out / "jobs.png")
        capture(page, f"#/jobs/{args.job}", args.out / "job.png", settle_seconds=4.0)
        page.goto("/#/files")
        page.wait_for_load_state("networkidle")
        page.locator(f"tr[data-file-id='{args.file}']").get_by_role("button", name="Preview").click()
        page.wait_for_selector("#file-preview")
        page.screenshot(path=str(args.out / "files.png"), full_page=True)
        capture(page, "#/new", args.out / "new-job.png")
        page.set_viewport_size(NARROW)
        capture(page, f"#/jobs/{args.job}", args.out / "job-narrow.png", settle_seconds=3.0)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
