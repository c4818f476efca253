"""Open a `snakemake --report` HTML file in a real headless Chromium (Debian's, driven by
Playwright) as a reader would, and record every request it makes.

Used by tests/workflow/test_workflow.py, and to make the screenshots in docs/:

    python tests/workflow/report_browser.py results/sample/report.html docs/
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

LOCAL = ("file:", "data:", "blob:", "about:")  # what a self-contained report may load


def chromium() -> str | None:
    """Debian's Chromium (apt-get install chromium), or IMGBENCH_CHROMIUM."""
    return os.environ.get("IMGBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def column(frame, heading: str) -> list[str]:
    """The visible cells of a column of the DataTable in `frame`, top to bottom."""
    idx = frame.evaluate("""(h) => [...document.querySelectorAll('table.dataTable[id^=itables_] thead th')]
                                     .map(th => th.textContent.trim()).indexOf(h)""", heading)
    assert idx >= 0, f"no column {heading!r}"
    return frame.evaluate("""(i) => [...document.querySelectorAll('table.dataTable[id^=itables_] tbody tr')]
                                    .map(tr => tr.children[i] ? tr.children[i].textContent.trim() : '')""", idx)


def explore(report: Path, shots: Path, backend: str = "parquet", sort_by: str = "median ms") -> dict:
    """Open the report; read its landing page; open the interactive table; sort it by `sort_by`
    and filter it by `backend`. Screenshots of each step go to `shots`. Returns what was seen
    and every URL requested (by the page and its frames)."""
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    seen: dict = {"requests": [], "errors": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            # Anything not local is recorded and refused, so a test run never reaches the network.
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(LOCAL)
                          else route.abort())
            context.on("request", lambda r: seen["requests"].append(r.url))
            page = context.new_page()
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.goto(report.resolve().as_uri())
            page.wait_for_selector("text=Headline at n =")
            seen["landing"] = page.inner_text("body")
            page.evaluate("document.querySelectorAll('*').forEach(e => { e.scrollTop = 0; })")
            page.set_viewport_size({"width": 1400, "height": 1350})  # the whole landing page
            page.screenshot(path=str(shots / "report-landing.png"))
            page.set_viewport_size({"width": 1400, "height": 1000})

            page.get_by_text("1. Summary", exact=True).click()
            row = page.locator("tr", has_text="summary.html")
            row.locator("a[iconname=eye]").click()
            frame_el = page.wait_for_selector("iframe")
            frame = frame_el.content_frame()
            frame.wait_for_selector("table.dataTable[id^=itables_] tbody tr", timeout=30000)
            seen["rows_before"] = len(column(frame, "backend"))
            seen["info_before"] = frame.inner_text(".dt-info")

            # the arrows sort (the heading's text can be selected, as itables sets it)
            arrows = frame.locator("table.dataTable[id^=itables_] thead th", has_text=sort_by).first \
                .locator(".dt-column-order")
            arrows.click()
            frame.wait_for_timeout(300)
            seen["sorted"] = column(frame, sort_by)
            arrows.click()  # descending
            frame.wait_for_timeout(300)
            seen["sorted_desc"] = column(frame, sort_by)

            pane = frame.locator(".dtsp-searchPane", has=frame.locator("input[placeholder=backend]"))
            pane.locator(".dtsp-name", has_text=backend).first.click()
            frame.wait_for_timeout(500)
            seen["filtered_backends"] = column(frame, "backend")
            seen["info_after"] = frame.inner_text(".dt-info")
            page.screenshot(path=str(shots / "report-table.png"))
        finally:
            browser.close()
    return seen


if __name__ == "__main__":
    seen = explore(Path(sys.argv[1]), Path(sys.argv[2]))
    outside = [u for u in seen["requests"] if not u.startswith(LOCAL)]
    print(f"{len(seen['requests'])} requests, {len(outside)} not local; table: {seen['info_before']} -> "
          f"{seen['info_after']}; errors: {seen['errors']}")
