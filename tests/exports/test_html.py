"""The HTML flame graph: a static check that it is one offline file, and
real rendering in headless Chromium (Debian's `chromium` package): the DOM
must show the expected frames, and search, zoom, hover and the thread
selector must work. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sigprof.core.sampler import Frame
from sigprof.formats import html
from sigprof.formats.profile_model import Profile

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
EXAMPLE = REPO / "examples" / "webapp.py"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)"
)


def _embedded_data(page: str) -> Any:
    match = re.search(r'<script type="application/json" id="sigprof-data">(.*?)</script>', page, re.DOTALL)
    assert match is not None
    return json.loads(match.group(1))


def test_single_offline_file(profile: Profile) -> None:
    page = html.render(profile).decode()
    assert page.startswith("<!DOCTYPE html>")
    # nothing fetched from anywhere: no external scripts, styles, images or fonts
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    data = _embedded_data(page)
    assert [t["name"] for t in data["threads"]] == ["MainThread", "worker-1"]
    names = {f[0] for f in data["functions"]}
    assert {"Model.crunch", "handle", "parse", "<module>", "Condition.wait"} <= names
    assert data["intervalNs"] == 10_000_000


def test_call_trie_rebuilds_every_stack(profile: Profile) -> None:
    data = html.page_data(profile)
    nodes = data["nodes"]
    # <module> roots three distinct stacks but is one trie node
    roots = [nodes[i + 1] for i in range(0, len(nodes), 2) if nodes[i] == -1]
    assert len(roots) == 2  # <module> and Condition.wait

    def path(node: int) -> list:
        names = []
        while node >= 0:
            function_id, line = data["frames"][nodes[2 * node + 1]]
            names.append((data["functions"][function_id][0], line))
            node = nodes[2 * node]
        return names  # leaf first

    rebuilt = {}
    for thread in data["threads"]:
        for node, weight in thread["samples"]:
            key = (thread["name"], tuple(path(node)))
            rebuilt[key] = rebuilt.get(key, 0) + weight
    expected = {}
    for thread in profile.threads.values():
        for _, stack_id, weight in thread.samples:
            frames = tuple((f.function, f.lineno) for f in profile.stack_frames(stack_id))
            expected[(thread.name, frames)] = expected.get((thread.name, frames), 0) + weight
    assert rebuilt == expected


def test_script_tags_in_names_cannot_break_out(profile: Profile) -> None:
    profile.add_sample(1001, [Frame("</script><b>x</b>", "/a.py", None, 1)])
    page = html.render(profile).decode()
    assert page.count("</script>") == 2  # only the page's own two script elements
    assert any(f[0] == "</script><b>x</b>" for f in _embedded_data(page)["functions"])


@needs_chromium
def test_dom_shows_frames_and_search_from_url(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "known.html"
    path.write_bytes(html.render(profile))
    assert CHROMIUM is not None
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,800",
         "--virtual-time-budget=5000", "--dump-dom", path.as_uri() + "#search=crunch"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert 'data-ready="true"' in dom
    for name in ("Model.crunch", "handle", "parse", "Condition.wait"):
        assert f'data-function="{name}"' in dom
    assert re.search(r'class="frame match"[^>]*data-function="Model.crunch"', dom)
    # 5 of the 13 samples are in Model.crunch
    assert ">matched 38.5%<" in dom


@pytest.fixture(scope="module")
def example_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real profile: the example service under `sigprof run`. 600 requests:
    `score`, the test's smallest function, gets 0.7-5% of the samples of a
    150-request run (2-17 samples on 3.15), and once none: the page then had
    no `score` frame to hover."""
    import sigprof

    reason = sigprof.native_unavailable_reason()
    if reason is not None:
        pytest.skip(f"native sampler unavailable: {reason}")
    out = tmp_path_factory.mktemp("html") / "webapp.html"
    subprocess.run(
        [sys.executable, "-m", "sigprof", "run", "-o", str(out), str(EXAMPLE), "--requests", "600"],
        check=True, capture_output=True, timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (tests/requirements-local.txt)"
    )
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def test_example_in_browser(browser: Any, example_page: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(example_page.as_uri())
    page.wait_for_selector("body[data-ready=true]")
    for name in ("handle_request", "query_database", "score", "worker", "serve"):
        assert page.locator(f'.frame[data-function="{name}"]').count() >= 1, name
    page.screenshot(path=str(ARTIFACTS / "flamegraph.png"), full_page=True)

    # hover: function, file:line, self and total
    page.locator('.frame[data-function="score"]').first.hover()
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    assert "score" in text and re.search(r"webapp\.py:\d+", text)
    assert "Total" in text and "Self" in text and "%" in text
    page.screenshot(path=str(ARTIFACTS / "flamegraph-hover.png"))

    # search highlights matches and reports their share
    page.fill("#search", "query_database")
    assert page.locator("#match").inner_text().startswith("matched ")
    matched = page.locator(".frame.match")
    assert matched.count() >= 1
    assert set(matched.evaluate_all("els => els.map(e => e.dataset.function)")) == {"query_database"}
    page.fill("#search", "")

    # click to zoom: the frame fills the width, the breadcrumb names it
    page.locator('.frame[data-function="handle_request"]').first.click()
    assert "handle_request" in page.locator("#crumbs").inner_text()
    box = page.locator('.frame[data-function="handle_request"]').first.bounding_box()
    flame = page.locator("#flame").bounding_box()
    assert box["width"] > 0.95 * flame["width"]
    assert page.locator('.frame[data-function="serve"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "flamegraph-zoomed.png"))
    page.keyboard.press("Escape")
    assert page.locator('.frame[data-function="serve"]').count() >= 1

    # one thread: a worker has no main-thread frames
    worker = page.locator("#thread option", has_text="worker-0").get_attribute("value")
    page.select_option("#thread", value=worker)
    assert page.locator('.frame[data-function="serve"]').count() == 0
    assert page.locator('.frame[data-function="handle_request"]').count() >= 1
    assert not errors, errors
    page.close()
