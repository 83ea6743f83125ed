"""The web export: charrnn.js in Node and the exported page in Chromium (from file://) write the
text `charrnn sample --precision fp32 --no-echo` writes for the same checkpoint, seed and
options, for an LSTM character model, a GRU word model and a labelled records model (plain
RNN); and the pieces that make that so, against Python: the random numbers, the word
tokenizer, the next-token probabilities.

CI (.ci/run) installs Node and Chromium and sets CHARRNN_BROWSER_TEST=required: there a missing
one fails these tests; elsewhere they are skipped with the command that installs it.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import need, subprocess_env
from test_export import as_cli, cli_text, tiny_run

import charrnn

pytestmark = pytest.mark.slow  # Node and Chromium, real processes: `pytest -m "not slow"` leaves them out

NODE = shutil.which("node") or shutil.which("nodejs")


@pytest.fixture(scope="module")
def node() -> str:
    if NODE is None:
        need("Node.js", "apt-get install -y nodejs")
    version = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        need(f"Node.js 18 or later (found {version})", "install a newer nodejs")
    return NODE


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Each tiny model exported for the web in fp32, the precision that gives the CLI's text."""
    root = tmp_path_factory.mktemp("web")
    out = {}
    for kind in ("lstm-char", "gru-word", "rnn-records"):
        charrnn.load(tiny_run(kind)).export(root / kind, "web", "fp32")
        out[kind] = root / kind
    return out


DRIVER = r"""
const charrnn = require(process.argv[2]);
const job = JSON.parse(require("fs").readFileSync(process.argv[3], "utf8"));
const E = charrnn._engine;
(async () => {
  const out = {};
  if (job.weights) {
    out.samples = {};
    for (const kernel of job.kernels) {
      const m = await charrnn.load(job.weights, { wasm: kernel === "wasm-simd", table: job.table });
      if (m.info.kernel !== kernel) throw new Error(`asked for ${kernel}, got ${m.info.kernel}`);
      out.info = m.info;
      out.samples[kernel] = [];
      for (const c of job.cases) {
        try {
          const pieces = [];
          for await (const p of m.stream(c)) pieces.push(p);
          out.samples[kernel].push({ text: pieces.join(""), pieces });
        } catch (e) {
          out.samples[kernel].push({ error: e.message, field: e.field });
        }
      }
      out.next = [];
      for (const [prompt, k, o] of job.next || []) out.next.push(await m.nextTokenProbs(prompt, k, o));
    }
  }
  if (job.uniform) {
    out.uniform = job.uniform.map(([seed, step]) => {
      const s = BigInt(seed);
      return [E.uniform(Number(s >> 32n), Number(s & 0xffffffffn), 0, step), E.uniformBig(s, 0, step)];
    });
  }
  if (job.split) {
    const tok = new E.Tokenizer(job.split.tokenizer, job.split.unicode);
    out.split = job.split.texts.map((t) => tok.split(t));
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e && e.stack || e); process.exit(1); });
"""


def run_node(node: str, job: dict, tmp_path: Path, library: Path) -> dict:
    driver, job_file = tmp_path / "driver.js", tmp_path / "job.json"
    driver.write_text(DRIVER, encoding="utf-8")
    job_file.write_text(json.dumps(job), encoding="utf-8")
    r = subprocess.run(
        [node, str(driver), str(library), str(job_file)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# Options as the CLI takes them; each case is sampled by Node (both kernels) and by the CLI.
CASES = {
    "lstm-char": [
        dict(prompt="The quick", seed=1, length=300),
        dict(prompt="", seed=2, temp=1.0, length=300),
        dict(prompt="A", temp=0.0, length=200),
        dict(prompt="Birds", seed=3, temp=1.2, top_k=5, length=300),
        dict(prompt="Birds", seed=4, temp=0.9, top_p=0.8, length=300),
        dict(prompt="Then", seed=5, temp=1.5, top_k=10, top_p=0.9, length=300),
        dict(prompt="The", seed=6, temp=1.0, stop="\n", length=400),
        dict(prompt="The", seed=7, temp=1.0, stop="the ", length=400),
        dict(prompt="A cat", seed=2**63 - 1, temp=0.8, length=200),
        dict(prompt="A cat", seed=8, temp=1e-30, length=100),
    ],
    "gru-word": [
        dict(prompt="The quick brown", seed=1, length=200),
        dict(prompt="", seed=2, temp=1.0, length=200),
        dict(prompt="A", temp=0.0, length=100),
        dict(prompt="Birds sing", seed=3, temp=1.2, top_k=5, length=200),
        dict(prompt="Birds sing", seed=4, temp=0.9, top_p=0.7, length=200),
        dict(prompt="The", seed=5, temp=1.0, stop=" dog", length=300),
        dict(prompt="The zebra, then", seed=6, temp=0.8, unknown="unk", length=100),
    ],
    "rnn-records": [
        dict(label="up", seed=3, length=40),
        dict(label="low", seed=4, temp=1.0, length=40),
        dict(seed=5, temp=1.0, length=40),
        dict(prompt="ab", label="low", seed=6, length=40),
        dict(label="up", seed=7, temp=1.5, length=3),
        dict(label="up", temp=0.0, length=40),
        dict(label="low", seed=8, temp=1.2, top_k=3, top_p=0.9, length=40),
    ],
}


def js_options(case: dict) -> dict:
    """A CLI case as charrnn.js's options (temperature is spelled out; the seed as a string)."""
    o = {("temperature" if k == "temp" else k): v for k, v in case.items()}
    if "seed" in o:
        o["seed"] = str(o["seed"])
    return o


@pytest.mark.parametrize("kind", list(CASES))
def test_node_writes_the_clis_text_for_each_seed_and_option(node, exports, kind, cli, tmp_path):
    cases = CASES[kind]
    got = run_node(
        node,
        {
            "weights": str(exports[kind] / "weights.js"),
            "kernels": ["wasm-simd", "js"],
            "cases": [js_options(c) for c in cases],
        },
        tmp_path,
        exports[kind] / "charrnn.js",
    )
    run = tiny_run(kind)
    texts = []
    for i, case in enumerate(cases):
        want = cli_text(cli, run, **case)
        for kernel in ("wasm-simd", "js"):
            out = got["samples"][kernel][i]
            assert "error" not in out, (case, out)
            assert as_cli(out["text"]) == want, (kernel, case)
        texts.append(want)
    assert len(set(texts)) == len(texts)  # the cases differ: every option changed the text
    if kind == "lstm-char":
        assert any(len(t) > 250 for t in texts)  # several hundred characters agree, not a few


def test_without_the_layer_0_table_the_text_is_the_same(node, exports, cli, tmp_path):
    """A large word vocabulary keeps layer 0's input product per token instead of the table."""
    cases = CASES["gru-word"][:4]
    got = run_node(
        node,
        {
            "weights": str(exports["gru-word"] / "weights.js"),
            "kernels": ["wasm-simd", "js"],
            "table": False,
            "cases": [js_options(c) for c in cases],
        },
        tmp_path,
        exports["gru-word"] / "charrnn.js",
    )
    for i, case in enumerate(cases):
        want = cli_text(cli, tiny_run("gru-word"), **case)
        assert [as_cli(got["samples"][k][i]["text"]) for k in ("wasm-simd", "js")] == [want, want], case


def test_stop_strings_are_never_shown_in_part_while_streaming(node, exports, tmp_path):
    stop = "e "
    cases = [dict(prompt="The", seed=s, temperature=1.0, stop=stop, length=400) for s in range(20)]
    got = run_node(
        node,
        {"weights": str(exports["lstm-char"] / "weights.js"), "kernels": ["wasm-simd"], "cases": cases},
        tmp_path,
        exports["lstm-char"] / "charrnn.js",
    )
    model = charrnn.load(tiny_run("lstm-char"), precision="fp32")
    cut = 0
    for case, out in zip(cases, got["samples"]["wasm-simd"]):
        shown = ""
        for piece in out["pieces"]:
            shown += piece
            assert stop not in shown
        assert shown == model.sample("The", 400, 1.0, seed=case["seed"], stop=stop)
        cut += len(shown) < 400
    assert cut >= 5  # the stop string was met, not only the length


def test_next_token_probabilities_match_python(node, exports, tmp_path):
    queries = [
        ["The qu", 5, {"temperature": 1.0}],
        ["", 3, {"temperature": 0.7}],
        ["Birds s", 65, {"temperature": 2.0}],
        ["The", 4, {"temperature": 0.0}],
    ]
    got = run_node(
        node,
        {"weights": str(exports["lstm-char"] / "weights.js"), "kernels": ["wasm-simd"], "cases": [], "next": queries},
        tmp_path,
        exports["lstm-char"] / "charrnn.js",
    )
    model = charrnn.load(tiny_run("lstm-char"), precision="fp32")
    for (prompt, k, o), top in zip(queries, got["next"]):
        want = model.next_token_probs(prompt, k, o["temperature"])
        assert [t["token"] for t in top] == [t for t, _ in want]
        assert [t["p"] for t in top] == pytest.approx([p for _, p in want], abs=1e-6)
    # A records model's empty prompt is the start of a record of its label; labels are never drawn.
    got = run_node(
        node,
        {
            "weights": str(exports["rnn-records"] / "weights.js"),
            "kernels": ["js"],
            "cases": [],
            "next": [["", 40, {"label": "up"}]],
        },
        tmp_path,
        exports["rnn-records"] / "charrnn.js",
    )
    want = charrnn.load(tiny_run("rnn-records"), precision="fp32").next_token_probs("", 40, label="up")
    assert [(t["token"], round(t["p"], 6)) for t in got["next"][0]] == [(t, round(p, 6)) for t, p in want]
    assert all(p == 0 for t, p in want if t.startswith("<|label:"))


def test_mistakes_are_errors_that_name_the_field(node, exports, tmp_path):
    cases = [
        dict(prompt="\u4e2d"),
        dict(label="sideways"),
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_k=0),
        dict(seed="-1"),
        dict(seed=str(2**63)),
        dict(length=-5),
    ]
    got = run_node(
        node,
        {"weights": str(exports["rnn-records"] / "weights.js"), "kernels": ["js"], "cases": cases},
        tmp_path,
        exports["rnn-records"] / "charrnn.js",
    )
    outs = got["samples"]["js"]
    fields = [o.get("field") for o in outs]
    assert fields == ["prompt", "label", "temperature", "top_p", "top_k", "seed", "seed", "length"], outs
    assert "never saw" in outs[0]["error"] and "low, up" in outs[1]["error"]
    got = run_node(
        node,
        {"weights": str(exports["lstm-char"] / "weights.js"), "kernels": ["js"], "cases": [dict(label="up")]},
        tmp_path,
        exports["lstm-char"] / "charrnn.js",
    )
    assert got["samples"]["js"][0]["field"] == "label"
    assert got["info"]["name"] == "lstm-char" and got["info"]["cell"] == "lstm" and got["info"]["labels"] == []


def test_the_random_numbers_are_pythons(node, exports, tmp_path):
    from charrnn.sampling.decode import uniform

    rng = random.Random(0)
    pairs = [
        [seed, step]
        for seed in (0, 1, 7, 2**31 - 1, 2**32, 2**53 + 1, 2**63 - 1)
        for step in (0, 1, 2, 1000, 2**40 + 5)
    ]
    pairs += [[rng.randrange(2**63), rng.randrange(2**31)] for _ in range(300)]
    got = run_node(node, {"uniform": [[str(s), t] for s, t in pairs]}, tmp_path, exports["lstm-char"] / "charrnn.js")
    for (seed, step), (halves, big) in zip(pairs, got["uniform"]):
        assert halves == big == uniform(seed, 0, step), (seed, step)


# Characters the word rule treats differently: joiners, digits of other scripts, marks, letters
# and digits beyond the first 64K, Python's whitespace that JavaScript's \s lacks (U+1C-U+1F,
# U+85) and JavaScript's that Python's lacks (U+FEFF), letters of a newer Unicode than Python's.
TRICKY = (
    "a",
    "Z",
    "é",
    "e\u0301",
    "ß",
    "_",
    "7",
    "٣",
    "߁",
    "²",
    "½",
    "Ⅻ",
    "〇",
    "中",
    "ก",
    "\u0e34",
    "क",
    "\u093f",
    "𝐀",
    "𝟎",
    "𐐀",
    "😀",
    "'",
    "’",
    "-",
    "‐",
    ".",
    ",",
    " ",
    "\t",
    "\n",
    "\r",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1f",
    "\x85",
    "\xa0",
    "\u2028",
    "\u3000",
    "\ufeff",
    "\u200b",
    "!",
    "?",
    "$",
    "\u0378",
    "\U0001e4d0",
    "\U0001e4f0",
    "\u31ef",
)


def test_the_word_tokenizer_splits_as_python(node, exports, tmp_path):
    from charrnn.data.tokenizer import Tokenizer
    from charrnn.export.weights import unicode_classes

    rng = random.Random(1)
    texts = [
        "don't stop",
        "well-known rock'n'roll",
        "3.14 and 1,000.5",
        "dogs' -- end.",
        "naïve café",
        "x'",
        "'x",
        "a-",
        "-a",
        "1.",
        ".1",
        "1.a",
        "٣.٣",
        "²,²",
        "a’b",
        "a‐b",
        "\u0e01\u0e34\u0e01",
        "😀😀a😀",
        "",
    ]
    texts += ["".join(rng.choice(TRICKY) for _ in range(rng.randint(1, 30))) for _ in range(3000)]
    uni = unicode_classes()
    for rule in (2, 1):
        d = {"level": "word", "vocab": ["<unk>"], "rule": rule}
        got = run_node(
            node,
            {"split": {"tokenizer": d, "unicode": uni, "texts": texts}},
            tmp_path,
            exports["lstm-char"] / "charrnn.js",
        )
        py = Tokenizer.from_dict(d)
        for text, pieces in zip(texts, got["split"]):
            assert pieces == py.split(text), (rule, text)
    # Character models split into code points, as Python's list(str) does (not UTF-16 units).
    got = run_node(
        node,
        {"split": {"tokenizer": {"level": "char", "vocab": ["a"]}, "unicode": None, "texts": texts[:200]}},
        tmp_path,
        exports["lstm-char"] / "charrnn.js",
    )
    assert got["split"] == [list(t) for t in texts[:200]]


def test_fp16_weights_stay_close_to_fp32(node, tmp_path, cli):
    run = tiny_run("lstm-char")
    charrnn.load(run).export(tmp_path / "half", "web", "fp16")
    queries = [["The quick brown fox jumps", 65, {"temperature": 1.0}], ["Birds sing in", 65, {"temperature": 1.0}]]
    got = run_node(
        node,
        {"weights": str(tmp_path / "half" / "weights.js"), "kernels": ["wasm-simd"], "cases": [], "next": queries},
        tmp_path,
        tmp_path / "half" / "charrnn.js",
    )
    model = charrnn.load(run, precision="fp32")
    assert got["info"]["precision"] == "fp16"
    for (prompt, k, o), top in zip(queries, got["next"]):
        want = dict(model.next_token_probs(prompt, k, o["temperature"]))
        assert max(abs(t["p"] - want[t["token"]]) for t in top) < 2e-3


def test_the_embedded_webassembly_is_built_from_its_source():
    from charrnn.export.wasm import build

    held, by = build.embedded()
    assert held[:4] == b"\0asm" and len(held) > 100
    try:
        here = build.clang_version()
        wasm = build.build()
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"no clang and wasm-ld to rebuild it here ({e}); apt-get install clang lld")
    if here != by:
        pytest.skip(f"charrnn.js holds a build by {by}; this is {here}")
    assert wasm == held, "charrnn.js holds another build: run python charrnn/export/wasm/build.py"


# ---------------------------------------------------------------- the page, from disk, in Chromium


def open_page(browser, folder: Path):
    """The exported page opened from disk, once its first sample (written on opening) is done;
    every URL it asks for is recorded in page.requested."""
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.requested = []
    page.errors = []
    page.on("request", lambda r: page.requested.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto((folder / "index.html").as_uri())
    page.wait_for_function("document.getElementById('status').dataset.state === 'done'")
    return page


def generate(page, **options):
    """Fill the form (None: leave the field empty), press Generate, wait until it is done."""
    from playwright.sync_api import expect

    fields = {
        "prompt": "#prompt",
        "temp": "#temperature",
        "length": "#length",
        "seed": "#seed",
        "top_k": "#top-k",
        "top_p": "#top-p",
        "stop": "#stop-at",
    }
    for name, selector in fields.items():
        value = options.get(name)
        page.fill(selector, "" if value is None else str(value).replace("\n", "\\n"))
    if "label" in options:
        page.select_option("#label", options["label"])
    page.evaluate("document.getElementById('status').dataset.state = 'idle'")  # 'done' must come from this click
    page.click("#generate")
    expect(page.locator("#status")).to_have_attribute("data-state", "done")
    return page.text_content("#output")


PAGE_CASES = {
    "lstm-char": dict(prompt="The quick", seed=11, temp=1.1, top_k=20, top_p=0.95, stop="!", length=300),
    "gru-word": dict(prompt="The quick brown", seed=12, temp=1.0, top_k=8, length=120),
    "rnn-records": dict(prompt="a", label="low", seed=13, temp=0.9, length=40),
}


@pytest.mark.parametrize("kind", list(PAGE_CASES))
def test_the_page_opened_from_disk_writes_the_clis_text(browser, exports, kind, cli):
    page = open_page(browser, exports[kind])
    case = PAGE_CASES[kind]
    text = generate(page, **case)
    assert as_cli(text) == cli_text(cli, tiny_run(kind), **case)
    assert page.text_content("#seed-value") == str(case["seed"])
    assert page.text_content("#model-info").startswith(kind)
    assert [u for u in page.requested if not u.startswith(("file:", "blob:"))] == []
    assert page.errors == []
    page.close()


def test_the_page_streams_stops_copies_and_reuses_the_seed(browser, exports, cli):
    from playwright.sync_api import expect

    page = open_page(browser, exports["lstm-char"])
    model = charrnn.load(tiny_run("lstm-char"), precision="fp32")

    # The first sample came on opening, with a random seed that is shown; one click reuses it.
    first = page.text_content("#output")
    seed = int(page.text_content("#seed-value"))
    assert as_cli(first) == cli_text(cli, tiny_run("lstm-char"), seed=seed, length=500)
    page.click("#reuse-seed")
    assert page.input_value("#seed") == str(seed)
    assert generate(page, seed=seed, length=500) == first

    # The next-character panel at the cursor, from the model in the page.
    page.fill("#prompt", "The quick")
    page.fill("#temperature", "0.8")
    page.press("#prompt", "End")
    candidates = page.locator("#next-list button")
    expect(candidates).to_have_count(5)
    expect(candidates.first).to_contain_text(model.next_token_probs("The quick", 1, 0.8)[0][0].replace(" ", "␣ space"))

    # A long generation streams in pieces while the page stays responsive, and Stop ends it.
    page.fill("#length", "1000000")
    page.fill("#seed", "")
    page.click("#generate")
    page.wait_for_function(
        "document.getElementById('output').textContent.length > 2000"
        " && document.getElementById('status').dataset.state === 'generating'"
    )
    assert page.evaluate("1 + 1") == 2  # the main thread answers: sampling runs in a worker
    assert int(page.get_attribute("#output", "data-events")) >= 2
    page.click("#stop")
    expect(page.locator("#status")).to_have_attribute("data-state", "stopped")
    stopped = len(page.text_content("#output"))
    page.wait_for_timeout(300)
    assert len(page.text_content("#output")) == stopped < 1_000_000
    expect(page.locator("#generate")).to_be_enabled()

    # Copy puts the output on the clipboard; Ctrl+Enter in the prompt generates.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#copy")
    expect(page.locator("#status")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == page.text_content("#output")
    page.fill("#length", "50")
    page.fill("#seed", "5")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#status")).to_have_attribute("data-state", "done")
    assert page.text_content("#output") == model.sample("The quick", 50, 0.8, seed=5)

    # A prompt the model cannot read is an error that names the field.
    page.fill("#prompt", "\u4e2d\u6587")
    page.click("#generate")
    expect(page.locator("#status")).to_have_attribute("data-state", "error")
    expect(page.locator("#status")).to_contain_text("prompt")
    assert page.errors == []
    page.close()


def test_the_page_works_from_a_static_web_server_and_loads_a_safetensors_url(browser, exports, cli, tmp_path):
    """Any static host (here Python's http.server): the page as from disk, and charrnn.load(url)
    of a model.safetensors beside it (fetch works over http, not from file://)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "site"
    shutil.copytree(exports["gru-word"], folder)
    charrnn.load(tiny_run("lstm-char")).export(folder, "safetensors", "fp32")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        page.wait_for_function("document.getElementById('status').dataset.state === 'done'")
        case = PAGE_CASES["gru-word"]
        assert as_cli(generate(page, **case)) == cli_text(cli, tiny_run("gru-word"), **case)
        text = page.evaluate("""async () => {
            const m = await charrnn.load("model.safetensors");
            const text = await m.sample({ prompt: "The quick", length: 200, seed: 3 });
            m.close();
            return text;
        }""")
        assert as_cli(text) == cli_text(cli, tiny_run("lstm-char"), prompt="The quick", length=200, seed=3)
        page.close()
    finally:
        server.shutdown()


def test_node_loads_a_safetensors_file_by_path_and_bytes(node, tmp_path, cli):
    run = tiny_run("lstm-char")
    charrnn.load(run).export(tmp_path / "st", "safetensors", "fp32")
    charrnn.load(run).export(tmp_path / "web", "web", "fp32")
    script = tmp_path / "load.js"
    script.write_text(
        r"""
const charrnn = require(process.argv[2]);
const fs = require("fs");
(async () => {
  const byPath = await charrnn.load(process.argv[3]);
  const byBytes = await charrnn.load(fs.readFileSync(process.argv[3]));
  const o = { prompt: "Birds", length: 150, seed: 9, temperature: 1.0 };
  const out = [await byPath.sample(o), await byBytes.sample(o)];
  try { await charrnn.load(process.argv[2]); } catch (e) { out.push(e.message); }
  process.stdout.write(JSON.stringify(out));
})();
""",
        encoding="utf-8",
    )
    r = subprocess.run(
        [node, str(script), str(tmp_path / "web" / "charrnn.js"), str(tmp_path / "st" / "model.safetensors")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    by_path, by_bytes, refused = json.loads(r.stdout)
    want = cli_text(cli, run, prompt="Birds", length=150, seed=9, temp=1.0)
    assert as_cli(by_path) == as_cli(by_bytes) == want
    assert "not a charrnn model file" in refused  # charrnn.js itself is no model


def test_a_model_of_one_record_per_line_never_writes_a_newline(node, tmp_path):
    """As in Python: no training record of a --records lines model holds a newline, so none is
    sampled, however hot the temperature."""
    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(f"{a}{b}-{c}" for a in "kmt" for b in ("ala", "obo", "ire") for c in "xyz") + "\n")
    run = tmp_path / "run"
    charrnn.train(
        corpus,
        out=run,
        records="lines",
        hidden=32,
        layers=1,
        embed=16,
        max_steps=20,
        batch_size=4,
        device="cpu",
        precision="fp32",
        lr=0.02,
        warmup_steps=2,
    )
    charrnn.load(run).export(tmp_path / "web", "web", "fp32")
    cases = [dict(seed=str(s), temperature=4.0, length=30) for s in range(60)]
    got = run_node(
        node,
        {"weights": str(tmp_path / "web" / "weights.js"), "kernels": ["wasm-simd"], "cases": cases},
        tmp_path,
        tmp_path / "web" / "charrnn.js",
    )
    texts = [out["text"] for out in got["samples"]["wasm-simd"]]
    assert len(texts) == 60 and not any("\n" in t for t in texts)
