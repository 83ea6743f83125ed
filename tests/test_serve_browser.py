"""The page in a real browser: Debian's Chromium, driven by Playwright, against a live
`charrnn serve` started here on 127.0.0.1 and a free port. Type a prompt, see the next-character
candidates, generate and watch the text stream in, stop, change the temperature.

CI (.ci/run) installs Chromium and sets CHARRNN_BROWSER_TEST=required, so there a missing
browser fails the test; elsewhere it is skipped with the command that installs it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import TINY_RECORDS, labelled_names, subprocess_env

import charrnn

pytestmark = pytest.mark.slow  # real processes: see `pytest -m 'not slow'` for the quick loop


@contextlib.contextmanager
def live_server(run: Path, *flags: str):
    """`charrnn serve` as a real process on a free port; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", "-c", str(run), "--port", "0", *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=subprocess_env(),
        text=True,
    )
    url: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            if "serving at" in line and not url:
                url.append(line.split("serving at ")[1].split()[0])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(120)
    try:
        assert url, f"charrnn serve did not start (exit code {proc.poll()})"
        yield url[0]
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def server(run_dir):
    with live_server(run_dir, "--max-length", "1000000") as url:
        yield url


@pytest.fixture(scope="module")
def page(server, browser):
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    yield page
    page.close()


def test_type_generate_stream_stop_and_change_temperature(page, run_dir):
    from playwright.sync_api import expect

    model = charrnn.load(run_dir)
    prompt = "The quick"

    # The page names the model it runs, its size and validation loss (once /v1/models answered).
    expect(page.locator("#model-info")).to_contain_text("validation loss")
    info = page.text_content("#model-info")
    assert info.startswith(run_dir.name) and "parameters" in info and "validation loss" in info

    # Typing shows the likeliest next characters at the cursor; choosing one inserts it.
    page.fill("#prompt", prompt)
    page.press("#prompt", "End")
    candidates = page.locator("#next-list button")
    expect(candidates).to_have_count(5)
    top = model.next_token_probs(prompt, k=1, temperature=0.8)[0][0]
    candidates.first.click()
    expect(page.locator("#prompt")).to_have_value(prompt + top)
    page.fill("#prompt", prompt)

    # A long generation: the text grows while it is still generating, then Stop ends it.
    page.fill("#length", "1000000")
    page.click("#generate")
    page.wait_for_function(
        "document.getElementById('output').textContent.length > 0"
        " && document.getElementById('status').dataset.state === 'generating'"
    )
    shown = page.evaluate("document.getElementById('output').textContent.length")
    page.wait_for_function(
        f"document.getElementById('output').textContent.length > {shown}"
        " && document.getElementById('status').dataset.state === 'generating'"
    )
    assert int(page.get_attribute("#output", "data-events")) >= 2
    page.click("#stop")
    expect(page.locator("#status")).to_have_attribute("data-state", "stopped")
    expect(page.locator("#generate")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()

    # Temperature 0 by the keyboard (the slider follows), Ctrl+Enter in the prompt: greedy text,
    # the model's own greedy sample, streamed in more than one piece.
    page.fill("#length", "300")
    page.fill("#temperature", "0")
    expect(page.locator("#temperature-range")).to_have_value("0")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#status")).to_have_attribute("data-state", "done")
    greedy = model.sample(prompt, length=300, temperature=0.0)
    assert page.text_content("#output") == greedy
    assert int(page.get_attribute("#output", "data-events")) >= 2

    # A higher temperature with a seed: the same text as the API gives for that seed, not the greedy one.
    page.fill("#temperature", "1.5")
    page.fill("#seed", "7")
    page.click("#generate")
    expect(page.locator("#status")).to_have_attribute("data-state", "done")
    hot = page.text_content("#output")
    assert hot == model.sample(prompt, length=300, temperature=1.5, seed=7)
    assert hot != greedy

    # Every decoding option, and the seed that made the text, shown and reusable in one click.
    page.fill("#top-k", "12")
    page.fill("#top-p", "0.9")
    page.fill("#stop-at", "\\n\\n")
    page.fill("#seed", "")
    page.click("#generate")
    expect(page.locator("#status")).to_have_attribute("data-state", "done")
    seed = int(page.text_content("#seed-value"))
    page.click("#reuse-seed")
    assert page.input_value("#seed") == str(seed)
    assert page.text_content("#output") == model.sample(
        prompt, length=300, temperature=1.5, top_k=12, top_p=0.9, stop="\n\n", seed=seed
    )
    page.fill("#top-k", "")
    page.fill("#top-p", "")
    page.fill("#stop-at", "")

    # A field the server refuses is shown as its error, naming the field.
    page.fill("#prompt", "\u4e2d\u6587")  # characters the model never saw
    page.click("#generate")
    expect(page.locator("#status")).to_have_attribute("data-state", "error")
    expect(page.locator("#status")).to_contain_text("prompt")


def test_a_labelled_records_model_writes_the_chosen_label(browser, tmp_path):
    from playwright.sync_api import expect

    corpus = tmp_path / "names.jsonl"
    corpus.write_text(labelled_names(400, seed=4), encoding="utf-8")
    charrnn.train(
        corpus,
        out=tmp_path / "run",
        records="jsonl:name",
        label_field="kind",
        max_steps=60,
        hidden=32,
        **TINY_RECORDS,
    )
    model = charrnn.load(tmp_path / "run")
    with live_server(tmp_path / "run") as url:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        expect(page.locator("#label-row")).to_be_visible()
        page.select_option("#label", "up")
        page.fill("#length", "40")
        page.fill("#seed", "3")
        page.click("#generate")
        expect(page.locator("#status")).to_have_attribute("data-state", "done")
        assert page.text_content("#output") == model.sample(label="up", length=40, seed=3)
        page.close()
