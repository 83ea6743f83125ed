"""The web app through Starlette's test client: every endpoint, every validation error, streaming,
the limits, many requests at once, and the same text as the CLI and the Python API for a seed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import TINY_RECORDS, assert_one_error_line, labelled_names, subprocess_env

import charrnn
from charrnn.server.requests import Limits

pytest.importorskip("starlette.testclient", reason="pip install -e '.[test]' (the serve extra)")
from starlette.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def model(run_dir):
    return charrnn.load(run_dir)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(charrnn.app(model)) as c:
        yield c


def events(body: str) -> list[tuple[str, dict]]:
    """(event, data) of each server-sent event."""
    out = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        event, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        out.append((event, json.loads(data)))
    return out


def error_of(r, status: int, field: str | None) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    return err["message"]


def wait_until(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


# ---------------------------------------------------------------- the endpoints


def test_the_package_root_exports_app_and_serve():
    from charrnn.server import app as module

    assert charrnn.app is module.app and charrnn.serve is module.serve


def test_models_say_what_info_says(client, run_dir, cli):
    r = client.get("/v1/models")
    assert r.status_code == 200
    d = r.json()
    (m,) = d["models"]
    info = json.loads(cli("info", run_dir, "--json").stdout)
    assert m == {"name": run_dir.name, "default": True, "records": False, "labels": [], **info}
    assert d["limits"] == Limits().to_dict()


def test_several_models_by_name(run_dir, model):
    with TestClient(charrnn.app({"a": model, "b": run_dir})) as c:
        assert [(m["name"], m["default"]) for m in c.get("/v1/models").json()["models"]] == [("a", True), ("b", False)]
        body = {"prompt": "The", "length": 30, "seed": 3}
        assert c.post("/v1/sample", json={**body, "model": "b"}).json()["model"] == "b"
        assert c.post("/v1/sample", json=body).json()["model"] == "a"
    with TestClient(charrnn.app([run_dir, run_dir])) as c:
        names = [m["name"] for m in c.get("/v1/models").json()["models"]]
        assert names == [run_dir.name, f"{run_dir.name}-2"]


def test_sample_is_the_cli_text_for_a_seed(client, run_dir, cli):
    body = {
        "prompt": "The",
        "length": 120,
        "temperature": 0.9,
        "top_k": 20,
        "top_p": 0.95,
        "seed": 11,
        "n": 3,
        "stop": "!",
    }
    r = client.post("/v1/sample", json=body)
    assert r.status_code == 200
    d = r.json()
    assert d["model"] == run_dir.name and d["seed"] == 11
    out = cli(
        "sample",
        "-c",
        run_dir,
        "-p",
        "The",
        "-n",
        120,
        "-t",
        0.9,
        "--top-k",
        20,
        "--top-p",
        0.95,
        "-s",
        11,
        "-N",
        3,
        "--stop",
        "!",
        "--no-echo",
        "--json",
    )
    assert out.exit_code == 0, out.stderr
    want = [json.loads(line)["text"] for line in out.stdout.splitlines()]
    assert [s["text"] for s in d["samples"]] == want
    assert [s["index"] for s in d["samples"]] == [0, 1, 2]


def test_sample_without_a_seed_reports_the_seed_it_drew(client, model):
    d = client.post("/v1/sample", json={"prompt": "a", "length": 80}).json()
    assert 0 <= d["seed"] < 2**31
    assert d["samples"][0]["text"] == model.sample("a", length=80, seed=d["seed"])


def test_sample_defaults_are_the_cli_defaults(client, model):
    d = client.post("/v1/sample", json={"seed": 5}).json()
    assert d["samples"][0]["text"] == model.sample("", length=500, temperature=0.8, seed=5)


def test_stream_sends_the_same_text_in_pieces(client, model):
    body = {"prompt": "The", "length": 400, "seed": 2, "temperature": 1.0}
    with client.stream("POST", "/v1/sample", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = events(r.read().decode())
    pieces = [d for e, d in got if e == "message"]
    assert len(pieces) >= 2 and all(p["index"] == 0 and p["text"] for p in pieces)
    assert got[-1] == ("done", {"model": client.get("/v1/models").json()["models"][0]["name"], "seed": 2})
    assert "".join(p["text"] for p in pieces) == model.sample("The", length=400, seed=2, temperature=1.0)


def test_stream_of_several_samples_tags_each_piece(client, model):
    with client.stream(
        "POST", "/v1/sample", json={"prompt": "a", "length": 60, "seed": 4, "n": 2, "stream": True}
    ) as r:
        got = events(r.read().decode())
    texts = ["", ""]
    for e, d in got:
        if e == "message":
            texts[d["index"]] += d["text"]
    assert texts == model.samples(2, "a", length=60, seed=4)


def test_score_whole_text_and_per_line(client, model, corpus_text):
    text = corpus_text[:800]
    d = client.post("/v1/score", json={"text": text}).json()
    assert d["loss"] == model.score(text).to_dict()["loss"]
    assert set(d) >= {"loss", "bits_per_char", "perplexity", "tokens", "model"}
    lines = text.split("\n")[:5]
    d = client.post("/v1/score", json={"text": "\n".join(lines) + "\n", "per_line": True}).json()
    assert d["lines"] == [r.to_dict() for r in model.score_lines(lines)]


def test_next_gives_the_likeliest_tokens(client, model):
    d = client.post("/v1/next", json={"prompt": "The qu", "k": 3, "temperature": 0.7}).json()
    want = model.next_token_probs("The qu", k=3, temperature=0.7)
    assert [(t["token"], t["p"]) for t in d["tokens"]] == [(t, p) for t, p in want]
    d = client.post("/v1/next", json={"prompt": "The qu"}).json()
    probs = [t["p"] for t in d["tokens"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9


def test_next_token_probs_agree_with_greedy_sampling_and_the_model(model, loaded):
    import torch

    for prompt in ["", "The quick", "jumps over the"]:
        top = model.next_token_probs(prompt, k=len(model.tokenizer.vocab), temperature=1.0)
        assert top[0][0] == model.sample(prompt, length=1, temperature=0.0)
        assert abs(sum(p for _, p in top) - 1) < 1e-9
        greedy = model.next_token_probs(prompt, k=2, temperature=0)
        assert greedy[0] == (top[0][0], 1.0) and greedy[1][1] == 0.0
        # The probabilities are the network's own (fp32 here: the session run's precision).
        net, tok, _ = loaded
        from charrnn.data.tokenizer import encode_prompt

        ids = torch.tensor([encode_prompt(tok, prompt)])
        with torch.no_grad():
            want = torch.softmax(net(ids)[0][0, -1].double(), -1)
        for t, p in top[:5]:
            assert p == pytest.approx(want[tok.stoi[t]].item(), abs=1e-4)


def test_next_token_probs_on_either_engine(engine, run_dir, loaded):
    """The native kernel and the torch path (no compiler, GPUs, GRU/RNN) give the network's own
    probabilities in fp32, and the greedy sample's token first."""
    import torch

    m = charrnn.load(run_dir, precision="fp32")
    top = m.next_token_probs("The quick", k=3)
    assert top[0][0] == m.sample("The quick", length=1, temperature=0.0)
    net, tok, _ = loaded
    with torch.no_grad():
        want = torch.softmax(net(torch.tensor([tok.encode("The quick")]))[0][0, -1].double(), -1)
    assert [p for _, p in top] == pytest.approx([want[tok.stoi[t]].item() for t, _ in top], abs=1e-5)


def test_next_token_probs_refuses_bad_arguments(model):
    with pytest.raises(charrnn.UsageError, match="k must"):
        model.next_token_probs("a", k=0)
    with pytest.raises(charrnn.UsageError, match="temperature"):
        model.next_token_probs("a", temperature=-1)


def test_the_page_and_its_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    for ref in ["/static/app.js", "/static/style.css"]:
        assert ref in html
        assert client.get(ref).status_code == 200
    assert "http" not in html.replace("http-equiv", "")  # nothing from elsewhere
    assert '<label for="prompt">' in html and '<label for="temperature">' in html


def test_unknown_paths_and_methods_answer_json(client):
    assert error_of(client.get("/nope"), 404, None)
    assert error_of(client.get("/v1/sample"), 405, None)


@pytest.fixture(scope="module")
def records_model(tmp_path_factory):
    """A labelled records model: short names, lower case ones labelled low, upper case ones up."""
    folder = tmp_path_factory.mktemp("records")
    corpus = folder / "names.jsonl"
    corpus.write_text(labelled_names(400, seed=3), encoding="utf-8")
    charrnn.train(
        corpus,
        out=folder / "run",
        records="jsonl:name",
        label_field="kind",
        max_steps=60,
        hidden=32,
        **TINY_RECORDS,
    )
    return charrnn.load(folder / "run")


def test_records_models_take_label_and_novel(records_model, client):
    with TestClient(charrnn.app({"names": records_model})) as c:
        (m,) = c.get("/v1/models").json()["models"]
        assert m["records"] is True and m["labels"] == ["low", "up"]
        d = c.post("/v1/sample", json={"label": "up", "n": 3, "seed": 5, "length": 20}).json()
        assert [x["text"] for x in d["samples"]] == records_model.samples(3, label="up", seed=5, length=20)
        d = c.post("/v1/sample", json={"novel": True, "n": 4, "seed": 6, "length": 20, "label": "low"}).json()
        want = records_model.draw(4, novel=True, seed=6, length=20, label="low")
        assert [x["text"] for x in d["samples"]] == [x.text for x in want.samples]  # the new ones, no padding
        assert d["summary"] == want.summary  # and how many were drawn and dropped
        with c.stream("POST", "/v1/sample", json={"novel": True, "n": 2, "seed": 6, "length": 20, "stream": True}) as r:
            got = events(r.read().decode())
        texts = ["", ""]
        for e, x in got:
            if e == "message":
                texts[x["index"]] += x["text"]
        assert texts == records_model.samples(2, novel=True, seed=6, length=20) and got[-1][0] == "done"
        assert "low, up" in error_of(c.post("/v1/sample", json={"label": "mid"}), 422, "label")
        error_of(c.post("/v1/next", json={"label": "mid"}), 422, "label")
        top = c.post("/v1/next", json={"label": "up", "k": 3}).json()["tokens"]
        assert [t["token"] for t in top] == [t for t, _ in records_model.next_token_probs("", k=3, label="up")]
    error_of(client.post("/v1/sample", json={"label": "up"}), 422, "label")  # not a records model


# ---------------------------------------------------------------- validation

BAD_SAMPLE = [
    ("prompt", 5),
    ("length", -1),
    ("length", "5"),
    ("length", True),
    ("length", 2.5),
    ("temperature", -0.1),
    ("temperature", "hot"),
    ("temperature", 1000),
    ("top_k", 0),
    ("top_p", 0),
    ("top_p", 1.5),
    ("seed", -1),
    ("seed", 2**64),
    ("stop", ""),
    ("stop", 3),
    ("n", 0),
    ("stream", "yes"),
    ("unknown", "maybe"),
    ("model", "nope"),
    ("model", 3),
    ("novel", "yes"),
    ("label", ""),
    ("label", 3),
    ("extra", True),
]


@pytest.mark.parametrize("field,value", BAD_SAMPLE)
def test_sample_names_the_bad_field(client, field, value):
    message = error_of(client.post("/v1/sample", json={"prompt": "a", field: value}), 422, field)
    assert field in message


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": 3}, "text"),
        ({"text": "ab", "per_line": 1}, "per_line"),
        ({"text": "ab", "unknown": "x"}, "unknown"),
        ({"text": "a"}, "text"),
        ({"text": "\u4e2d\u6587"}, "text"),
        ({"text": "ab", "model": "nope"}, "model"),
        ({"text": "ab", "extra": 1}, "extra"),
    ],
)
def test_score_names_the_bad_field(client, body, field):
    error_of(client.post("/v1/score", json=body), 422, field)


@pytest.mark.parametrize(
    "body,field",
    [
        ({"k": 0}, "k"),
        ({"k": 51}, "k"),
        ({"k": "3"}, "k"),
        ({"temperature": -1}, "temperature"),
        ({"prompt": ["a"]}, "prompt"),
        ({"prompt": "\u4e2d"}, "prompt"),
        ({"unknown": "x"}, "unknown"),
        ({"x": 1}, "x"),
    ],
)
def test_next_names_the_bad_field(client, body, field):
    error_of(client.post("/v1/next", json=body), 422, field)


def test_a_prompt_the_model_cannot_read_is_a_prompt_error(client, model):
    assert "never saw" in error_of(client.post("/v1/sample", json={"prompt": "a\u4e2d"}), 422, "prompt")
    d = client.post("/v1/sample", json={"prompt": "a\u4e2d", "unknown": "skip", "seed": 1, "length": 20}).json()
    assert d["samples"][0]["text"] == model.sample("a", length=20, seed=1)


@pytest.mark.parametrize("path", ["/v1/sample", "/v1/score", "/v1/next"])
def test_bodies_that_are_not_a_json_object(client, path):
    error_of(client.post(path, content=b"{not json", headers={"content-type": "application/json"}), 400, None)
    error_of(client.post(path, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400, None)
    error_of(client.post(path, json=["a"]), 400, None)
    assert "Content-Type" in error_of(
        client.post(path, content=b"{}", headers={"content-type": "text/plain"}), 415, None
    )
    error_of(client.post(path, content=b"{}"), 415, None)


# ---------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def small(model):
    limits = Limits(max_length=50, max_samples=2, max_prompt=10, max_body=200, max_jobs=2, max_k=3)
    with TestClient(charrnn.app(model, limits)) as c:
        yield c


def test_limits_are_enforced_and_named(small):
    assert "--max-length" in error_of(small.post("/v1/sample", json={"length": 51}), 422, "length")
    assert small.post("/v1/sample", json={"length": 50, "seed": 1}).status_code == 200
    assert "--max-samples" in error_of(small.post("/v1/sample", json={"n": 3, "length": 5}), 422, "n")
    assert "limit is 10" in error_of(small.post("/v1/sample", json={"prompt": "a" * 11}), 422, "prompt")
    error_of(small.post("/v1/next", json={"prompt": "a" * 11}), 422, "prompt")
    error_of(small.post("/v1/next", json={"k": 4}), 422, "k")
    assert small.get("/v1/models").json()["limits"]["max_length"] == 50
    # The default length is the CLI's 500, capped at the limit.
    assert len(small.post("/v1/sample", json={"seed": 1}).json()["samples"][0]["text"]) == 50


def test_body_size_limit(small):
    big = {"text": "a" * 300}
    assert "--max-body" in error_of(small.post("/v1/score", json=big), 413, None)

    def chunked():  # no Content-Length: counted as it arrives
        yield b'{"text": "'
        for _ in range(30):
            yield b"aaaaaaaaaa"
        yield b'"}'

    error_of(small.post("/v1/score", content=chunked(), headers={"content-type": "application/json"}), 413, None)


@pytest.mark.slow
def test_too_many_generations_at_once_is_503(model):
    web = charrnn.app(model, Limits(max_jobs=2, max_length=10_000_000))
    long = {"length": 10_000_000, "stream": True, "prompt": "a"}
    with TestClient(web) as c:
        with c.stream("POST", "/v1/sample", json=long) as a, c.stream("POST", "/v1/sample", json=long) as b:
            lines = [a.iter_lines(), b.iter_lines()]  # kept: a dropped iterator closes its stream
            assert all(next(it).startswith("data:") for it in lines)
            r = c.post("/v1/sample", json={"length": 5})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "--max-jobs" in error_of(r, 503, None)
            error_of(c.post("/v1/next", json={"prompt": "a"}), 503, None)
        wait_until(lambda: web.state.worker.live == 0)
        assert c.post("/v1/sample", json={"length": 5}).status_code == 200


# ---------------------------------------------------------------- many clients at once


def test_generations_taking_turns_give_the_text_each_gives_alone(model):
    """Each generation has a kernel of its own: stepping two in turn changes neither."""
    a, b = model.generate("The", 300, 1.0, seed=1), model.generate("a", 300, 0.5, seed=2)
    ta, tb = "", ""
    for pa, pb in zip(a, b):
        ta, tb = ta + pa[0], tb + pb[0]
    ta += "".join(p[0] for p in a)
    tb += "".join(p[0] for p in b)
    assert ta == model.sample("The", 300, 1.0, seed=1) and tb == model.sample("a", 300, 0.5, seed=2)


def test_many_clients_at_once_each_get_their_own_text(model):
    limits = Limits(max_length=1_000_000)
    with TestClient(charrnn.app(model, limits)) as c:
        results: dict[int, str] = {}

        def ask(seed: int) -> None:
            d = c.post("/v1/sample", json={"prompt": "The", "length": 300, "seed": seed}).json()
            results[seed] = d["samples"][0]["text"]

        threads = [threading.Thread(target=ask, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {s: model.sample("The", length=300, seed=s) for s in range(8)}


ASKS = [  # different prompts, lengths, seeds, temperatures, top-k/top-p, a stop string, n = 2
    {
        "prompt": "The"[: i % 4],
        "length": 120 + 37 * i,
        "seed": 1000 + i,
        "temperature": [0.8, 0.0, 1.3, 0.5][i % 4],
        "stream": i % 2 == 0,
        **({"top_k": 5} if i % 5 == 1 else {}),
        **({"top_p": 0.9} if i % 5 == 2 else {}),
        **({"stop": "e"} if i == 7 else {}),
        **({"n": 2} if i == 3 else {}),
    }
    for i in range(16)
]


def api_texts(model, ask: dict) -> list[str]:
    options = {k: v for k, v in ask.items() if k in ("top_k", "top_p", "stop")}
    return model.samples(ask.get("n", 1), ask["prompt"], ask["length"], ask["temperature"], seed=ask["seed"], **options)


def test_sixteen_clients_at_once_share_steps_and_each_get_the_api_text(model):
    """Concurrent requests step together in one multi-stream kernel; each still gets exactly the
    text the Python API (and so the CLI) gives its settings alone."""
    web = charrnn.app(model, Limits(max_length=1_000_000))
    shared = model.engine._shared
    if not shared:
        pytest.skip("the native kernel cannot run several streams of this model here")
    most = [0]
    real_step = shared.step

    def step() -> None:  # notes how many rows the busiest step served
        most[0] = max(most[0], shared.B - shared.free)
        real_step()

    shared.step = step
    results: dict[int, list[str]] = {}
    try:
        with TestClient(web) as c:

            def ask(i: int) -> None:
                body = ASKS[i]
                r = c.post("/v1/sample", json=body)
                if body["stream"]:
                    texts = [""] * body.get("n", 1)
                    for event, data in events(r.text):
                        if event == "message":
                            texts[data["index"]] += data["text"]
                    results[i] = texts
                else:
                    results[i] = [s["text"] for s in r.json()["samples"]]

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        del shared.step
    assert results == {i: api_texts(model, ASKS[i]) for i in range(16)}
    assert most[0] >= 4  # they did share steps
    assert shared.free == shared.B  # and gave every row back


def test_shared_generations_in_turns_give_the_text_each_gives_alone(model):
    """Rows taken and given back: a generation in a used row starts afresh, and neither stepping
    with others nor moving to a kernel of more or fewer rows as they come and go changes its text."""
    runs = [
        ("The", 100, 1.0, 1, 1),
        ("a", 400, 0.5, 2, 1),
        ("", 80, 0.0, 3, 3),
        ("Th", 300, 0.9, 4, 2),
        ("T", 60, 0.7, 5, 1),
    ]
    waiting, live, done = list(enumerate(runs)), {}, {}
    while waiting or live:
        while waiting and len(live) < 2:
            i, (prompt, length, t, seed, n) = waiting.pop(0)
            live[i] = (model.generate(prompt, length, t, seed=seed, n=n, shared=True), [""] * n)
        for i, (gen, texts) in list(live.items()):
            piece = next(gen, None)
            if piece is None:
                done[i] = texts
                del live[i]
            else:
                live[i] = (gen, [a + b for a, b in zip(texts, piece)])
    assert done == {i: model.samples(n, p, length, t, seed=seed) for i, (p, length, t, seed, n) in enumerate(runs)}


def test_more_shared_generations_than_rows_step_alone_with_the_same_text(model):
    gens = [model.generate("Th", 60, 0.8, seed=s, n=8, shared=True) for s in range(6)]  # 48 streams
    texts = [[""] * 8 for _ in gens]
    for pieces in zip(*gens):
        texts = [[a + b for a, b in zip(t, p)] for t, p in zip(texts, pieces)]
    for g, t in zip(gens, texts):
        for p in g:
            t[:] = [a + b for a, b in zip(t, p)]
    assert texts == [model.samples(8, "Th", 60, 0.8, seed=s) for s in range(6)]
    unused = model.generate("Th", 60, shared=True)  # never iterated: it holds no rows
    shared = model.engine._shared
    assert not shared or shared.free == shared.B
    del unused


@pytest.mark.slow
def test_a_long_generation_does_not_hold_back_a_short_one_and_ends_with_its_client(model):
    limits = Limits(max_length=10_000_000)
    web = charrnn.app(model, limits)
    with TestClient(web) as c:
        with c.stream("POST", "/v1/sample", json={"length": 10_000_000, "stream": True}) as long:
            lines = long.iter_lines()
            assert next(lines).startswith("data:")
            # The long one is still in progress: the short one is served between its chunks.
            short = c.post("/v1/sample", json={"prompt": "The", "length": 100, "seed": 9})
            assert short.json()["samples"][0]["text"] == model.sample("The", length=100, seed=9)
            d = c.post("/v1/next", json={"prompt": "The"})
            assert d.status_code == 200
            wait_until(lambda: web.state.worker.live == 1)  # the short ones end at their next turn
        # The client went away: the worker drops its generation.
        wait_until(lambda: web.state.worker.live == 0)


# ---------------------------------------------------------------- the command


def test_serve_command_errors_are_one_line(cli, tmp_path, run_dir):
    r = cli("serve", "-c", tmp_path / "nothing")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "checkpoint")
    r = cli("serve", "-c", run_dir, "--max-length", "0")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--max-length")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        r = cli("serve", "-c", run_dir, "--port", taken.getsockname()[1])
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "cannot listen", "--port")


def test_serve_without_the_extra_says_how_to_install_it(run_dir):
    code = (
        "import sys; sys.modules['uvicorn'] = None; sys.argv = ['charrnn', 'serve', '-c', sys.argv[1]];"
        "from charrnn.cli import main; main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert r.returncode == 1
    assert_one_error_line(r.stderr, "pip install 'charrnn[serve]'")


def test_serve_answers_on_localhost_only_by_name(model):
    """Bound to loopback, ``serve`` answers only loopback Host names (a rebound DNS name gets 400)."""
    with TestClient(charrnn.app(model, allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://127.0.0.1") as c:
        assert c.get("/v1/models").status_code == 200
        assert "Host" in error_of(c.get("/v1/models", headers={"host": "evil.example"}), 400, None)  # a JSON error
        assert c.get("/v1/models", headers={"host": "localhost:8000"}).status_code == 200


# ---------------------------------------------------------------- malformed bodies


MALFORMED = {
    "nested 2000 deep": ("/v1/sample", b"[" * 2000 + b"]" * 2000, 400, None),
    "an integer of 5000 digits": ("/v1/sample", b'{"length": ' + b"9" * 5000 + b"}", 400, None),
    "a field name that is a lone surrogate": ("/v1/sample", b'{"\\ud800": 1}', 422, "\ud800"),
    "a prompt with a lone surrogate": ("/v1/sample", b'{"prompt": "To be\\ud800"}', 422, "prompt"),
    "a text with a lone surrogate, per line": (
        "/v1/score",
        b'{"text": "To be\\ud800\\nor not", "per_line": true}',
        422,
        "text",
    ),
    "the same, unknown skip": (
        "/v1/score",
        b'{"text": "To be\\ud800\\nor not", "per_line": true, "unknown": "skip"}',
        422,
        "text",
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_every_malformed_body_is_a_4xx_json_error(client, name):
    path, body, status, field = MALFORMED[name]
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = json.loads(r.content.decode("ascii"))["error"]  # plain ASCII JSON, whatever the body held
    assert err["field"] == field and err["message"]


def test_a_records_model_with_nothing_new_to_say_says_how_many_it_dropped(tmp_path):
    """Novel records where none can be found (a model that learned its one name by heart, sampled
    greedily): no empty texts, and the counts of what was drawn and dropped."""
    corpus = tmp_path / "one.txt"
    corpus.write_text("kato\n" * 200)
    charrnn.train(
        corpus,
        out=tmp_path / "run",
        records="lines",
        hidden=32,
        layers=1,
        embed=16,
        max_steps=60,
        batch_size=8,
        device="cpu",
        precision="fp32",
        lr=0.03,
        warmup_steps=2,
    )
    with TestClient(charrnn.app({"one": charrnn.load(tmp_path / "run")})) as c:
        body = {"novel": True, "n": 3, "seed": 1, "length": 10, "temperature": 0.0}
        d = c.post("/v1/sample", json=body).json()
        assert d["samples"] == [] and d["summary"]["kept"] == 0
        assert d["summary"]["drawn"] == d["summary"]["dropped_copies"] > 0
        with c.stream("POST", "/v1/sample", json={**body, "stream": True}) as r:
            got = events(r.read().decode())
        assert got[-1][0] == "done" and got[-1][1]["summary"] == d["summary"]


@pytest.mark.slow
def test_any_loopback_address_answers_only_loopback_names(run_dir):
    """Bound to 127.0.0.2 (any address of 127.0.0.0/8), the server refuses a rebound DNS name."""
    import http.client

    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", "-c", str(run_dir), "--host", "127.0.0.2", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=subprocess_env(),
        text=True,
    )
    try:
        line = ""
        while "serving at" not in line:
            line = proc.stderr.readline()
            assert line, "charrnn serve did not start"
        port = int(line.split("serving at ")[1].split()[0].rstrip("/").rsplit(":", 1)[1])
        for host, status in (("127.0.0.2", 200), ("evil.example", 400)):
            conn = http.client.HTTPConnection("127.0.0.2", port, timeout=30)
            conn.request("GET", "/v1/models", headers={"Host": host})
            assert conn.getresponse().status == status, host
            conn.close()
    finally:
        proc.terminate()
        proc.wait(30)
