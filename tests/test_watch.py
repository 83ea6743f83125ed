"""Watching a run learn: samples at each evaluation (samples.jsonl, fixed seed), early stopping
(--patience), the overfit warning, the step checkpoints kept (--keep) and choosing one
(`charrnn info RUN`, `charrnn sample --step`)."""

from __future__ import annotations

import json
import random

import pytest
from conftest import TINY_FLAGS, assert_one_error_line, tiny_config

import charrnn
from charrnn.training.loop import train
from charrnn.training.report import Reporter
from charrnn.training.watch import evaluations_since_best, overfit_warning


def noise(n: int = 1200, seed: int = 0) -> str:
    """Random letters: nothing to learn that carries to the validation split, so a model that
    fits the training split soon does worse on it (overfits) within a few hundred tiny steps."""
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefgh") for _ in range(n))


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class Watcher(Reporter):
    """Records what a person would see, and how many step checkpoints exist at every report."""

    def __init__(self, out):
        self.out, self.messages, self.samples, self.most_kept = out, [], [], 0

    def _count(self):
        self.most_kept = max(self.most_kept, len(list(self.out.glob("step-*.pt"))))

    def message(self, text):
        self.messages.append(text)

    def step(self, *args):
        self._count()

    def sampled(self, step, val_loss, text):
        self._count()
        self.samples.append((step, text))


# ---------------------------------------------------------------- samples


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory, corpus_text):
    out = tmp_path_factory.mktemp("watch") / "run"
    cfg = tiny_config(
        out, **{"train.max_steps": 30, "train.eval_every": 10, "train.keep": 3, "train.sample_length": 40}
    )
    rep = Watcher(out)
    summary = train(cfg, corpus_text, "corpus", reporter=rep)
    return out, summary, rep


def test_a_sample_at_each_evaluation_in_samples_jsonl(sampled_run):
    out, _, rep = sampled_run
    samples, metrics = lines(out / "samples.jsonl"), lines(out / "metrics.jsonl")
    assert [s["step"] for s in samples] == [m["step"] for m in metrics] == [10, 20, 30]
    assert [s["val_loss"] for s in samples] == [m["val_loss"] for m in metrics]
    assert all(len(s["text"]) == 40 and s["seed"] == 1337 and s["temperature"] == 0.8 for s in samples)
    assert [(s["step"], s["text"]) for s in samples] == rep.samples  # shown as they were written
    assert len({s["text"] for s in samples}) > 1  # the model changed between evaluations


def test_each_sample_is_the_fixed_seed_text_of_its_checkpoint(sampled_run):
    """The same seed every time: a sample is what `charrnn sample --seed` gives for that step's
    checkpoint, so consecutive samples differ only by what the model learned."""
    out, _, _ = sampled_run
    for s in lines(out / "samples.jsonl"):
        model = charrnn.load(out, step=s["step"])
        assert model.sample("", length=40, temperature=0.8, seed=1337) == s["text"]


def test_resuming_appends_samples_and_can_turn_them_off(sampled_run, corpus_text, tmp_path):
    import shutil

    src, _, _ = sampled_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    train(tiny_config(out, **{"train.max_steps": 50, "train.eval_every": 10}), corpus_text, "corpus", resume=True)
    assert [s["step"] for s in lines(out / "samples.jsonl")] == [10, 20, 30, 40, 50]
    train(
        tiny_config(out, **{"train.max_steps": 60, "train.eval_every": 10, "train.sample_every": 0}),
        corpus_text,
        "corpus",
        resume=True,
    )
    assert len(lines(out / "samples.jsonl")) == 5
    assert (out / "metrics.jsonl").read_text().count("\n") == 6


def test_sample_every_n_evaluations_and_settings_from_yaml(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    (tmp_path / "run.yaml").write_text("train:\n  sample_every: 2\n  sample_length: 25\n  sample_temp: 0.5\n")
    r = cli(
        "train",
        corpus_file,
        "--config",
        tmp_path / "run.yaml",
        "--max-steps",
        "40",
        "--eval-every",
        "10",
        "--out",
        out,
        *TINY_FLAGS,
    )
    assert r.exit_code == 0, r.stderr
    samples = lines(out / "samples.jsonl")
    assert [s["step"] for s in samples] == [20, 40]
    assert all(len(s["text"]) == 25 and s["temperature"] == 0.5 for s in samples)
    assert "sample at step 20" in r.stderr and samples[0]["text"].strip() in r.stderr  # shown on stderr
    assert r.stdout == ""
    saved = (out / "config.yaml").read_text()
    assert "sample_every: 2" in saved and "sample_length: 25" in saved


# ---------------------------------------------------------------- early stopping and overfitting


def test_patience_stops_at_the_right_evaluation(cli, tmp_path):
    corpus = tmp_path / "noise.txt"
    corpus.write_text(noise())
    out = tmp_path / "run"
    r = cli(
        "train",
        corpus,
        "--max-steps",
        "300",
        "--eval-every",
        "10",
        "--patience",
        "3",
        "--val-fraction",
        "0.2",
        "--sample-every",
        "0",
        "--out",
        out,
        "--json",
        *TINY_FLAGS,
        "--hidden",
        "128",
    )
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    vals = [m["val_loss"] for m in lines(out / "metrics.jsonl")]
    # The first evaluation that is the 3rd in a row without a new best, worked out here by hand.
    best, since, stop_at = float("inf"), 0, None
    for i, v in enumerate(vals):
        best, since = (v, 0) if v < best else (best, since + 1)
        if since == 3:
            stop_at = i
            break
    assert stop_at is not None, "the run never went 3 evaluations without a new best"
    assert len(vals) == stop_at + 1  # it stopped there, not before, not after
    assert summary["stopped_early"] is True and summary["steps"] == 10 * len(vals) < 300
    assert "stopping early" in r.stderr and "--patience 3" in r.stderr
    assert charrnn.load(out).info["best_val_loss"] == pytest.approx(best, abs=1e-6)


def test_overfitting_is_reported_once_with_remedies(tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(
        out,
        **{
            "model.hidden": 128,
            "model.layers": 1,
            "model.dropout": 0.0,
            "train.max_steps": 150,
            "data.val_fraction": 0.2,
            "train.sample_every": 0,
        },
    )
    rep = Watcher(out)
    train(cfg, noise(), "noise", reporter=rep)
    warnings = [m for m in rep.messages if m.startswith("overfitting")]
    assert len(warnings) == 1, rep.messages
    assert "--dropout" in warnings[0] and "smaller model" in warnings[0] and "more data" in warnings[0]
    metrics = lines(out / "metrics.jsonl")
    assert metrics[-1]["val_loss"] > min(m["val_loss"] for m in metrics)  # validation did rise


def test_since_best_and_overfit_rules():
    h = [
        {"step": s, "val_loss": v, "train_loss": t}
        for s, v, t in [(10, 2.0, 2.1), (20, 1.5, 1.6), (30, 1.5, 1.4), (40, 1.6, 1.2)]
    ]
    assert evaluations_since_best([]) is None
    assert evaluations_since_best(h[:2]) == 0
    assert evaluations_since_best(h[:3]) == 1  # equal is not better: best.pt keeps the first
    assert evaluations_since_best(h) == 2
    assert overfit_warning(h[:3]) is None  # validation has not risen
    assert "rose to 1.6000 at step 40 from 1.5000 at step 20" in overfit_warning(h)
    rising_both = h[:2] + [{"step": 30, "val_loss": 1.7, "train_loss": 1.7}]
    assert overfit_warning(rising_both) is None  # both rising is a bad learning rate, not overfitting


# ---------------------------------------------------------------- kept checkpoints


def test_keep_k_never_leaves_more_than_k(tmp_path, corpus_text):
    out = tmp_path / "run"
    rep = Watcher(out)
    train(
        tiny_config(out, **{"train.max_steps": 40, "train.eval_every": 5, "train.keep": 2}),
        corpus_text,
        "corpus",
        reporter=rep,
    )
    assert rep.most_kept == 2
    assert sorted(p.name for p in out.glob("step-*.pt")) == ["step-000035.pt", "step-000040.pt"]
    # A resumed run may keep fewer; the older ones go.
    train(
        tiny_config(out, **{"train.max_steps": 50, "train.eval_every": 5, "train.keep": 1}),
        corpus_text,
        "corpus",
        resume=True,
    )
    assert [p.name for p in out.glob("step-*.pt")] == ["step-000050.pt"]
    # Starting over forgets the old run's checkpoints and samples.
    train(tiny_config(out, **{"train.max_steps": 5, "train.eval_every": 5}), corpus_text, "corpus", overwrite=True)
    assert list(out.glob("step-*.pt")) == []
    assert [s["step"] for s in lines(out / "samples.jsonl")] == [5]


def test_info_lists_a_runs_checkpoints(cli, sampled_run):
    out, _, _ = sampled_run
    r = cli("info", out, "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["checkpoints"]
    metrics = {m["step"]: m["val_loss"] for m in lines(out / "metrics.jsonl")}
    kept = [(c["name"], c["step"], c["val_loss"]) for c in rows if c["name"].startswith("step-")]
    assert kept == [(f"step-{s:06d}.pt", s, metrics[s]) for s in (10, 20, 30)]
    best = next(c for c in rows if c["name"] == "best.pt")
    assert best["val_loss"] == min(metrics.values()) and metrics[best["step"]] == best["val_loss"]
    assert next(c for c in rows if c["name"] == "last.pt")["step"] == 30
    text = cli("info", out).stdout
    assert "checkpoints:" in text and "step-000020.pt" in text and f"{metrics[20]:.4f}" in text


def test_sample_step_picks_that_checkpoint(cli, sampled_run):
    out, _, _ = sampled_run
    texts = {}
    for step in (10, 30):
        r = cli("sample", "-c", out, "--step", step, "--length", "40", "--seed", "7", "--no-echo")
        assert r.exit_code == 0, r.stderr
        texts[step] = r.stdout
        assert r.stdout.rstrip("\n") == charrnn.load(out / f"step-{step:06d}.pt").sample("", length=40, seed=7).rstrip(
            "\n"
        )
    assert texts[10] != texts[30]
    r = cli("sample", "-c", out, "--step", "15")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "no checkpoint of step 15", "10, 20, 30", "charrnn info")


@pytest.mark.parametrize(
    "flag,value", [("--patience", "0"), ("--keep", "-1"), ("--sample-every", "-2"), ("--sample-length", "0")]
)
def test_bad_watch_settings_are_usage_errors(cli, tmp_path, corpus_file, flag, value):
    r = cli("train", corpus_file, flag, value, "--max-steps", "5", "--out", tmp_path / "run", *TINY_FLAGS)
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, flag)


def test_resume_may_change_how_the_run_is_watched(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    assert cli("train", corpus_file, "--max-steps", "10", "--eval-every", "5", "--out", out, *TINY_FLAGS).exit_code == 0
    r = cli(
        "train",
        corpus_file,
        "--resume",
        "--max-steps",
        "20",
        "--out",
        out,
        "--keep",
        "1",
        "--patience",
        "5",
        "--sample-length",
        "10",
    )
    assert r.exit_code == 0, r.stderr
    assert [p.name for p in out.glob("step-*.pt")] == ["step-000020.pt"]
    assert len(lines(out / "samples.jsonl")[-1]["text"]) == 10


def test_on_a_terminal_the_latest_sample_shows_under_the_bar(monkeypatch):
    import io

    from rich.console import Console

    from charrnn import console

    screen = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=screen, force_terminal=True, width=60, color_system=None))
    rep = console.RichReporter()
    rep.start(100, None, 0)
    rep.sampled(10, 2.5, "first sample\n")
    rep.sampled(20, 2.1, "ROMEO:\nsecond sample")
    rep.finish()
    out = screen.getvalue()
    last_frame = out[
        out.rindex("step 0 ") :
    ]  # the bar's last drawing ("step 0": no step reported), and what is under it
    assert "sample at step 20, val loss 2.1000" in last_frame and "second sample" in last_frame
    assert "first sample" not in last_frame  # replaced, not stacked
    assert "loss" in last_frame.splitlines()[0]  # the bar first, the sample under it


def test_a_records_model_samples_whole_records(tmp_path, corpus_text):
    out = tmp_path / "run"
    train(
        tiny_config(out, **{"data.records": "lines", "train.max_steps": 20, "train.eval_every": 10, "train.keep": 1}),
        corpus_text,
        "corpus",
    )
    last = lines(out / "samples.jsonl")[-1]
    assert last["step"] == 20 and last["text"].count("\n") == 4  # five records, one per line
    assert last["text"].split("\n") == charrnn.load(out, step=20).samples(5, "", 200, 0.8, seed=1337)


@pytest.mark.slow
def test_patience_stops_every_rank_under_torchrun(tmp_path):
    from conftest import run_torchrun

    corpus = tmp_path / "noise.txt"
    corpus.write_text(noise(2400))
    out = tmp_path / "ddp"
    r = run_torchrun(
        "train",
        corpus,
        "--max-steps",
        300,
        "--eval-every",
        10,
        "--patience",
        2,
        "--val-fraction",
        0.2,
        "--out",
        out,
        "--json",
        "--quiet",
        *TINY_FLAGS,
        "--hidden",
        128,
    )  # no rank left waiting
    summary = json.loads([l for l in r.stdout.decode().splitlines() if l.startswith("{")][0])
    assert summary["stopped_early"] and summary["steps"] < 300
    assert lines(out / "metrics.jsonl")[-1]["step"] == summary["steps"]
