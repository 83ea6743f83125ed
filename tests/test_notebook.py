"""Where a person watches: charrnn.train's progress in a notebook and on a terminal, and silence
where no one does; the objects that show themselves (reprs, HTML cards, plot() figures); the
budget scale; and docs/tutorial.ipynb: its committed outputs, executed in a real kernel, rendered
in Chromium.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_corpus, subprocess_env

import charrnn
from charrnn.errors import CharrnnError, UsageError
from charrnn.training.report import Reporter

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.ipynb"
SCREENSHOT = ROOT / "docs" / "tutorial.png"
TINY = dict(
    hidden=32, layers=1, embed=16, seq_len=16, batch_size=4, device="cpu", precision="fp32", lr=1e-2, warmup_steps=5
)
CI_SCALE = "0.08"
"""The budget scale CI runs the tutorial at: its 2-minute runs take 9.6 s, its 1-minute ones 4.8 s
(the word model's setup alone takes about 2.5 s here, so much less would not train a step)."""


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def tiny_run(out: Path, **extra) -> charrnn.TrainResult:
    return charrnn.train(
        text=make_corpus(4000, seed=3), out=out, **{**TINY, "max_steps": 30, "eval_every": 10, **extra}
    )


@pytest.fixture(scope="module")
def api_run(tmp_path_factory) -> charrnn.TrainResult:
    """A run through charrnn.train, shared by this module's tests of what it shows."""
    return tiny_run(tmp_path_factory.mktemp("api") / "run")


# ---------------------------------------------------------------- objects that show themselves


def test_a_model_shows_its_shape_vocabulary_corpus_and_best_loss(run_dir):
    model = charrnn.load(run_dir)
    info = model.info
    text = repr(model)
    assert text.startswith("CharRNN(LSTM 2x32, ") and "\n" not in text and len(text) < 250, text
    for part in (
        f"{info['parameters']:,} parameters",
        f"{info['vocab_size']} characters",
        f"trained on {info['corpus']}",
        f"{info['steps']:,} steps",
        f"best val loss {info['best_val_loss']:.4f} nats/token",
        str(model.path),
    ):
        assert part in text, (part, text)
    page = model._repr_html_()
    assert page.count("<tr>") == 7 and "<table>" in page
    for label in ("model", "parameters", "vocabulary", "corpus", "trained", "best val loss", "checkpoint"):
        assert f">{label}</th>" in page


def test_a_word_records_model_names_its_tokens(tmp_path):
    names = "\n".join(f"name {w}" for w in make_corpus(1500, seed=5).split()) + "\n"
    run = charrnn.train(text=names, out=tmp_path / "w", level="word", records="lines", max_steps=5, **TINY)
    text = repr(run.load())
    assert "words (records: lines)" in text, text


def test_a_score_says_its_units(run_dir):
    model = charrnn.load(run_dir)
    score = model.score("The quick brown fox jumps over the lazy dog.\n")
    assert repr(score) == (
        f"Score({score.loss:.4f} nats/token, {score.bits_per_char:.4f} bits/char, "
        f"perplexity {score.perplexity:.2f}; {score.tokens:,} tokens, {score.chars:,} chars)"
    )
    unseen = model.score("The quick brown fox \u20ac\u20ac jumps.\n")  # the euro sign is not in the corpus
    assert repr(unseen).endswith("2 unseen left out)")


def test_a_run_shows_its_steps_time_losses_and_checkpoint(api_run):
    r = api_run
    text = repr(r)
    assert text.startswith(f"TrainResult(30 steps in {r.seconds:.1f}s, ") and "\n" not in text
    assert f"best val loss {r.best_val_loss:.4f}" in text and f"train {r.train_loss:.4f}" in text
    assert text.endswith(f"nats/token; {r.checkpoint})")
    page = r._repr_html_()
    assert "LSTM 1x32" in page  # from the run folder's config.yaml
    assert f"{r.parameters:,} parameters" in page and "bits/char" in page and r.checkpoint in page
    assert '>ended</th><td style="text-align:left">finished<' in page


def test_html_cards_escape_what_they_show(tmp_path):
    from charrnn.notebook import TrainingView, card_html

    assert "<b>&lt;script&gt;</b>" not in card_html("T", [("k", "<script>")])
    assert "&lt;script&gt;" in card_html("T", [("k", "<script>")])
    view = TrainingView(
        {
            "step": 3,
            "total": 10,
            "loss": "1",
            "val": "2",
            "tps": "5",
            "fraction": 0.3,
            "elapsed": 1.0,
            "left": 2.0,
            "messages": ["a <note>"],
            "evaluations": [],
            "samples": [{"title": "sample at step 3", "text": "if a < b & c:"}],
            "ended": False,
            "result": None,
        }
    )
    page = view._repr_html_()
    assert "if a &lt; b &amp; c:" in page and "a &lt;note&gt;" in page
    assert "if a < b & c:" in repr(view) and "30%" in repr(view) and "0:02 left" in repr(view)


def test_plot_returns_the_figure_the_cli_writes(api_run, run_dir, cli, tmp_path):
    pytest.importorskip("matplotlib")
    fig = api_run.plot()
    png = fig._repr_png_()  # what a notebook shows
    assert png_size(png) == (800, 500)
    r = cli("plot", api_run.out, "-o", tmp_path / "cli.png")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "cli.png").read_bytes() == png  # one function draws both
    assert charrnn.plot(api_run.out)._repr_png_() == png
    both = charrnn.plot(api_run, run_dir, x="tokens", width=640, height=400)
    labels = [t.get_text() for t in both.axes[0].get_legend().get_texts()]
    assert len(labels) == 3 and labels[-1] == "train (dashed)", labels  # two runs and the key
    assert png_size(both._repr_png_()) == (640, 400)
    with pytest.raises(UsageError):
        charrnn.plot()


def test_charrnn_plot_stays_the_function_when_its_module_is_imported(run_dir):
    """The loss curves' module (charrnn.curves) is not named like the public function, so
    importing it, as the CLI and TrainResult.plot do, leaves ``charrnn.plot`` the function."""
    pytest.importorskip("matplotlib")
    import importlib
    import inspect

    importlib.import_module("charrnn.curves")
    assert callable(charrnn.plot) and charrnn.plot(run_dir).axes
    assert "x: 'str' = 'steps'" in str(inspect.signature(charrnn.plot))


def test_plot_without_matplotlib_gives_the_install_hint(monkeypatch, api_run):
    import charrnn.curves as plot_module

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    plot_module._loss_curves_class.cache_clear()
    try:
        with pytest.raises(CharrnnError, match=r"pip install 'charrnn\[plot\]'") as e:
            api_run.plot()
        assert "\n" not in str(e.value) and "-o" not in str(e.value)
    finally:
        plot_module._loss_curves_class.cache_clear()


# ---------------------------------------------------------------- progress where someone watches


class Shown:
    """Stands in for IPython's display: records the view shown and each update."""

    def __init__(self):
        self.views = []

    def __call__(self, view):
        self.views.append(view)
        return self

    def update(self, view):
        self.views.append(view)


def test_in_a_notebook_train_shows_progress_samples_and_the_end(monkeypatch, tmp_path):
    from charrnn import notebook

    shown = Shown()
    monkeypatch.setattr(notebook, "in_notebook", lambda: True)
    monkeypatch.setattr(notebook, "_display", shown)
    t0 = time.monotonic()
    result = tiny_run(tmp_path / "run", max_steps=40)
    seconds = time.monotonic() - t0
    assert shown.views, "nothing was shown"
    last = shown.views[-1]
    text, page = repr(last), last._repr_html_()
    assert text.startswith(
        f"trained: 40 steps in 0:{round(result.seconds):02d}, best val loss {result.best_val_loss:.4f}; "
        f"saved {result.checkpoint}"
    )
    assert "\u2588" * 30 + " 100%" in text
    assert f"loss {result.train_loss:.4f}" in text and "tokens/s" in text
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        assert f"{m['step']:>8,}" in text and f"{m['val_loss']:.4f}" in text
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples and samples[-1]["text"].strip("\n") in text
    assert f"sample at step {samples[-1]['step']}" in page and "charrnn-progress" in page
    # Redrawn at each event, and for training-loss reports at most every UPDATE_EVERY seconds.
    events = 1 + 1 + len(metrics) + len(samples) + 1 + 1  # message (auto settings), start, evals, samples, finish, done
    assert len(shown.views) <= events + seconds / notebook.UPDATE_EVERY + 2, len(shown.views)


def test_progress_false_and_a_reporter_of_ones_own_show_nothing(monkeypatch, tmp_path):
    from charrnn import notebook

    shown = Shown()
    monkeypatch.setattr(notebook, "in_notebook", lambda: True)
    monkeypatch.setattr(notebook, "_display", shown)
    tiny_run(tmp_path / "quiet", max_steps=5, progress=False)
    assert shown.views == []

    class Mine(Reporter):
        def __init__(self):
            self.steps = []

        def step(self, step, loss, tokens_per_second, elapsed):
            self.steps.append(step)

    mine = Mine()
    tiny_run(tmp_path / "mine", max_steps=20, reporter=mine)
    assert shown.views == [] and mine.steps[-1] == 20


def test_nothing_is_printed_when_no_one_watches(tmp_path, capfd):
    from charrnn.api import watching_reporter
    from charrnn.notebook import in_notebook

    assert not in_notebook() and not sys.stderr.isatty()  # pytest captures stderr
    assert watching_reporter() is None
    tiny_run(tmp_path / "run", max_steps=10)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ---------------------------------------------------------------- the budget scale


class Messages(Reporter):
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


@pytest.mark.slow
def test_the_budget_scale_shortens_every_time_budget(monkeypatch, tmp_path):
    import yaml

    monkeypatch.setenv("CHARRNN_BUDGET_SCALE", "0.25")
    said = Messages()
    r = charrnn.train(text=make_corpus(4000, seed=3), out=tmp_path / "run", time_budget="16s", reporter=said, **TINY)
    assert "CHARRNN_BUDGET_SCALE=0.25: the time budget of 16s becomes 4s" in said.lines
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["time_budget"] == 4.0
    assert 2 < r.seconds < 5, r.seconds  # the budget covers the whole call
    for bad in ("fast", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("CHARRNN_BUDGET_SCALE", bad)
        with pytest.raises(UsageError, match="CHARRNN_BUDGET_SCALE must be a number above 0"):
            charrnn.train(text="abc" * 100, out=tmp_path / "bad", time_budget="10s", **TINY)


def test_a_resumed_runs_saved_budget_is_not_scaled_twice(monkeypatch):
    from charrnn.config import RunConfig
    from charrnn.training.setup import starting_config

    monkeypatch.setenv("CHARRNN_BUDGET_SCALE", "0.5")
    saved = RunConfig()
    saved.train.time_budget = 10.0  # scaled once when it was given
    resumed = {"config": saved.to_dict(), "train_seconds": 4.0}
    _, seconds = starting_config(RunConfig(), resumed, None, lambda _: None)
    assert seconds == 6.0  # what is left of it
    given = RunConfig()
    given.train.time_budget = 20.0
    _, seconds = starting_config(given, resumed, None, lambda _: None)
    assert seconds == 10.0  # a budget given now is scaled


# ---------------------------------------------------------------- the tutorial as committed


def tutorial():
    import nbformat

    return nbformat.read(TUTORIAL, as_version=4)


def outputs_of(cell) -> tuple[str, str, list[bytes]]:
    """(text shown, HTML shown, PNG images) of a code cell's outputs."""
    text, page, images = [], [], []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            text.append(o["text"])
        elif o["output_type"] in ("display_data", "execute_result"):
            text.append(o["data"].get("text/plain", ""))
            page.append(o["data"].get("text/html", ""))
            if "image/png" in o["data"]:
                images.append(base64.b64decode(o["data"]["image/png"]))
    return "".join(text), "".join(page), images


def check_executed(nb) -> None:
    """Every code cell ran in order, without error or warning; the training, sampling and plot
    cells hold progress, text and an image."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.get("execution_count") for c in code] == list(range(1, len(code) + 1))
    for c in code:
        for o in c.get("outputs", []):
            assert o["output_type"] != "error", c.source
            assert not (o["output_type"] == "stream" and o["name"] == "stderr"), (c.source, o["text"])
    training = [c for c in code if "charrnn.train(" in c.source]
    assert len(training) == 4
    for c in training:
        text, page, _ = outputs_of(c)
        assert "charrnn-progress" in page and "\u2588" in text, c.source
        assert text.startswith("trained: ") and "val loss" in text and "sample at step" in text, text[:300]
    plots = [c for c in code if c.source.strip() in ("result.plot()", "charrnn.plot(result, words)")]
    assert len(plots) == 2
    for c in plots:
        (png,) = outputs_of(c)[2]
        assert png_size(png) == (800, 500)
    sampling = [c for c in code if ".sample(" in c.source or ".samples(" in c.source]
    assert len(sampling) >= 4
    for c in sampling:
        text = outputs_of(c)[0]
        assert len(text.strip()) > 40, c.source


def test_the_committed_tutorial_is_executed_and_small():
    nb = tutorial()
    check_executed(nb)
    size = TUTORIAL.stat().st_size
    assert size < 300_000, f"docs/tutorial.ipynb is {size:,} bytes: keep its outputs small"
    for c in nb.cells:
        if c.cell_type == "code":
            for png in outputs_of(c)[2]:
                assert len(png) < 100_000
    # Its outputs come from the real budgets, not CI's shortened ones.
    assert "CHARRNN_BUDGET_SCALE" not in json.dumps([c.get("outputs", []) for c in nb.cells])


def test_the_tutorials_install_cell_keeps_colabs_torch():
    first = next(c for c in tutorial().cells if c.cell_type == "code").source
    assert "%pip install" in first and "git+https://" in first
    assert "torch" not in first.split("%pip install", 1)[1], "installing torch would replace Colab's CUDA build"
    assert 'find_spec("charrnn") is None' in first  # where charrnn is installed it does nothing
    assert (
        "pip install charrnn\n" not in first and "pip install -q charrnn\n" not in first
    )  # PyPI's charrnn is another project


def test_the_notebook_page_shows_the_screenshot():
    page = (ROOT / "docs" / "notebook.md").read_text(encoding="utf-8")
    assert "tutorial.png" in page and "tutorial.ipynb" in page and "CHARRNN_BUDGET_SCALE" in page
    assert png_size(SCREENSHOT.read_bytes())[0] >= 800


# ---------------------------------------------------------------- real kernels, terminals, browsers


def kernel(tmp_path: Path, monkeypatch) -> str:
    """A kernel spec of this interpreter, first on JUPYTER_PATH (a user's own "python3" kernel
    may run another Python); no `ipykernel install` needed."""
    spec = tmp_path / "jupyter" / "kernels" / "charrnn-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "charrnn test",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "charrnn-test"


@pytest.mark.slow
def test_the_tutorial_runs_in_a_kernel(tmp_path, monkeypatch):
    """The whole tutorial, in a real kernel, each time budget scaled by CI_SCALE (about 35 s)."""
    from nbclient import NotebookClient

    name = kernel(tmp_path, monkeypatch)
    monkeypatch.setenv("CHARRNN_BUDGET_SCALE", CI_SCALE)
    work = tmp_path / "work"
    work.mkdir()
    nb = tutorial()
    for c in nb.cells:
        if c.cell_type == "code":
            c.update(outputs=[], execution_count=None)
    NotebookClient(nb, timeout=300, kernel_name=name, resources={"metadata": {"path": str(work)}}).execute()
    check_executed(nb)
    first = next(c for c in nb.cells if c.cell_type == "code" and "charrnn.train(" in c.source)
    assert f"CHARRNN_BUDGET_SCALE={float(CI_SCALE):g}: the time budget of 120s" in outputs_of(first)[0]
    assert (work / "checkpoints" / "stdlib" / "best.pt").is_file()


@pytest.mark.slow
def test_interrupting_the_kernel_saves_the_run_and_says_so(tmp_path, monkeypatch):
    """The notebook's Ctrl-C: the run stops at a step, saves last.pt and returns its result."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel(tmp_path, monkeypatch), cwd=str(tmp_path))
    try:
        code = (
            f"import charrnn\nr = charrnn.train(text={make_corpus(20000, seed=1)!r}, out='run', time_budget='60s', "
            + ", ".join(f"{k}={v!r}" for k, v in TINY.items())
            + ")\nprint(r.interrupted, r.steps)"
        )
        msg_id = kc.execute(code)
        last, printed, interrupted = "", "", False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            msg = kc.get_iopub_msg(timeout=90)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind in ("display_data", "update_display_data"):
                last = content["data"]["text/plain"]
                if not interrupted and last.startswith("training: step ") and not last.startswith("training: step 0"):
                    km.interrupt_kernel()
                    interrupted = True
            elif kind == "stream":
                printed += content["text"]
            elif kind == "error":
                pytest.fail(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                break
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert interrupted, last
    done, steps = printed.split()
    assert done == "True" and 0 < int(steps)
    assert last.startswith(f"interrupted at step {int(steps):,} after 0:"), last
    assert "saved run/last.pt: resume=True continues it" in last.splitlines()[0]
    assert (tmp_path / "run" / "last.pt").is_file()


def run_train(progress: bool, tmp_path: Path, tty: bool) -> tuple[bytes, bytes]:
    """charrnn.train in a fresh process; (stdout, stderr) with stderr a terminal (a pty) or a pipe."""
    code = (
        f"import charrnn\ncharrnn.train(text={make_corpus(3000, seed=2)!r}, out={str(tmp_path / 'r')!r}, "
        f"max_steps=30, eval_every=10, progress={progress}, overwrite=True, "
        + ", ".join(f"{k}={v!r}" for k, v in TINY.items())
        + ")\n"
    )
    env = {**subprocess_env(), "TERM": "xterm", "COLUMNS": "100"}
    if not tty:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout, p.stderr
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    err = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = p.stdout.read()
    assert p.wait(60) == 0, err
    return out, err


@pytest.mark.slow
def test_a_terminal_sees_the_bar_and_progress_false_silences_it(tmp_path):
    out, err = run_train(True, tmp_path, tty=True)
    shown = err.decode("utf-8", "replace")
    assert out == b""
    for part in ("step 30", "tok/s", "val loss", "sample at step 10"):
        assert part in shown, (part, shown[-2000:])
    out, err = run_train(False, tmp_path, tty=True)
    assert out == b"" and err == b""


@pytest.mark.slow
def test_a_pipe_gets_nothing(tmp_path):
    assert run_train(True, tmp_path, tty=False) == (b"", b"")


@pytest.mark.slow
def test_the_tutorial_renders_in_chromium(tmp_path, browser):
    """The committed notebook through nbconvert into Chromium: the training cell's display and the
    loss curves draw. CHARRNN_UPDATE_SCREENSHOT=1 writes docs/tutorial.png from the same page."""
    from nbconvert import HTMLExporter

    nb = tutorial()
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Train"))
    end = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Sample"))
    nb.cells = nb.cells[start:end]  # the training cell, its result, the loss curves
    page_html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(("data:", "about:")) else route.abort(),
    )  # a closed network: the template's CDN scripts are not needed
    page.set_content(page_html, wait_until="load")
    progress = page.locator(".charrnn-progress")
    assert progress.count() == 1
    assert "trained:" in progress.inner_text() and "sample at step" in progress.inner_text()
    bar = progress.locator("pre").first
    assert bar.evaluate("e => getComputedStyle(e).fontFamily").lower().find("mono") >= 0
    image = page.locator("img").first
    assert image.evaluate("i => i.complete && i.naturalWidth") == 800
    shot = page.screenshot(full_page=True)
    page.close()
    width, height = png_size(shot)
    assert width == 1000 and height > 1200
    from PIL import Image

    pixels = Image.open(io.BytesIO(shot)).convert("L")
    assert pixels.getextrema()[0] < 60, "the page is blank"
    if os.environ.get("CHARRNN_UPDATE_SCREENSHOT") == "1":  # 256 colours: a third of the bytes, the same to the eye
        Image.open(io.BytesIO(shot)).convert("RGB").quantize(256).save(SCREENSHOT, optimize=True)
