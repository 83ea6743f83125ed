"""`charrnn plot`: PNG images of the right size for one and several runs, the text chart, the
hint when matplotlib is missing, and one error line for a folder that is not a run."""

from __future__ import annotations

import json
import math
import struct
import sys

import pytest
from conftest import assert_one_error_line

from charrnn.curves import load_run, render_text


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def fake_run(folder, losses, hidden=32, start_seconds=0.0):
    """A run folder as training leaves it: metrics.jsonl (one record per evaluation) and config.yaml."""
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for i, (train, val) in enumerate(losses, 1):
            f.write(
                json.dumps(
                    {
                        "step": 10 * i,
                        "tokens": 640 * i,
                        "train_loss": train,
                        "seconds": start_seconds + i,
                        "val_loss": val,
                        "val_bits_per_char": val / 0.6931,
                        "val_tokens": 500,
                        "val_chars": 500,
                    }
                )
                + "\n"
            )
    (folder / "config.yaml").write_text(f"model:\n  hidden: {hidden}\n  cell: lstm\ntrain:\n  out: {folder}\n")
    return folder


def test_one_trained_run_makes_a_png_of_the_asked_size(cli, run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    r = cli("plot", run_dir, "-o", out, "--size", "640x400")
    assert r.exit_code == 0, r.stderr
    assert png_size(out) == (640, 400)
    assert r.stdout == ""  # the image is the output; stdout stays empty


@pytest.mark.parametrize("axis", ["steps", "tokens", "time"])
def test_several_runs_overlaid_in_one_png(cli, tmp_path, axis):
    pytest.importorskip("matplotlib")
    a = fake_run(tmp_path / "a", [(3.0, 2.9), (2.5, 2.4), (2.1, 2.2)], hidden=32)
    b = fake_run(tmp_path / "b", [(3.1, 3.0), (2.2, 2.3), (1.8, 2.35)], hidden=64)
    out = tmp_path / "cmp.png"
    r = cli("plot", a, b, "-o", out, "--x", axis)
    assert r.exit_code == 0, r.stderr
    assert png_size(out) == (800, 500)
    # The image depends on what is drawn: two runs do not make the one-run picture.
    single = tmp_path / "single.png"
    assert cli("plot", a, "-o", single, "--x", axis).exit_code == 0
    assert single.read_bytes() != out.read_bytes()


def test_legend_labels_name_the_settings_that_differ(tmp_path):
    from charrnn.curves import label_runs

    runs = [
        load_run(fake_run(tmp_path / "a", [(2, 2)], hidden=32)),
        load_run(fake_run(tmp_path / "b", [(2, 2)], hidden=64)),
    ]
    label_runs(runs)
    assert [r.label for r in runs] == ["a (hidden=32)", "b (hidden=64)"]


def test_missing_matplotlib_gives_the_install_hint(cli, tmp_path, monkeypatch):
    run = fake_run(tmp_path / "a", [(3.0, 2.9), (2.5, 2.4)])
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    r = cli("plot", run, "-o", tmp_path / "c.png")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "pip install 'charrnn[plot]'")
    assert not (tmp_path / "c.png").exists()
    # The text chart needs no extra.
    assert cli("plot", run).exit_code == 0


def test_text_chart_marks_validation_training_and_best(cli, tmp_path):
    a = fake_run(tmp_path / "a", [(3.0, 2.9), (2.5, 2.4), (2.1, 2.6)])
    b = fake_run(tmp_path / "b", [(3.2, 3.1), (2.8, 2.7)], hidden=64)
    r = cli("plot", a, b)
    assert r.exit_code == 0, r.stderr
    chart = r.stdout
    for ch in "AaBb*":
        assert ch in chart
    assert "3.200" in chart and "2.100" in chart  # the y range: highest and lowest loss drawn
    assert (
        f"A a (hidden=32): 3 evaluations, best val 2.4000, {2.4 / math.log(2):.3f} bits/char at step 20, last train 2.1000 (step 30)"
        in chart
    )
    assert "B b (hidden=64): 2 evaluations, best val 2.7000" in chart


def test_time_axis_lays_resumed_commands_end_to_end(tmp_path):
    run = fake_run(tmp_path / "a", [(3.0, 2.9), (2.5, 2.4)])
    with open(run / "metrics.jsonl", "a") as f:  # a resumed command: its clock starts again
        f.write(json.dumps({"step": 30, "tokens": 1920, "train_loss": 2.0, "seconds": 0.5, "val_loss": 2.1}) + "\n")
    assert load_run(run).xs("time") == [1.0, 2.0, 2.5]
    assert f"best val 2.1000, {2.1 / math.log(2):.3f} bits/char at step 30" in render_text([load_run(run)], x="time")


def test_a_line_cut_short_by_a_running_write_is_skipped(tmp_path):
    run = fake_run(tmp_path / "a", [(3.0, 2.9), (2.5, 2.4)])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "tra')
    assert [r["step"] for r in load_run(run).records] == [10, 20]


def test_not_a_run_folder_is_one_error_line(cli, tmp_path):
    r = cli("plot", tmp_path / "nowhere")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    r = cli("plot", tmp_path / "empty")
    assert_one_error_line(r.stderr, "has no metrics.jsonl")


@pytest.mark.parametrize(
    "args,needle", [(["--x", "epochs"], "--x"), (["--size", "big"], "--size"), (["-o", "c.bmpx"], ".bmpx")]
)
def test_bad_options_are_usage_errors(cli, tmp_path, args, needle):
    pytest.importorskip("matplotlib")
    run = fake_run(tmp_path / "a", [(3.0, 2.9)])
    args = [str(tmp_path / a) if a.startswith("c.") else a for a in args]
    r = cli("plot", run, *args)
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, needle)
