"""Run configuration: durations, YAML in, validation, flags over the file."""

from __future__ import annotations

import pytest

from charrnn.config import RunConfig, load_yaml, merge, parse_duration
from charrnn.errors import UsageError


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 90),
        ("90s", 90),
        ("5m", 300),
        ("2min", 120),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1.5h", 5400),
        (" 10 m ", 600),
        (45, 45),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "", "m", "5x", "5 minutes", "-5m", "5m5x"])
def test_parse_duration_rejects_nonsense(text):
    with pytest.raises(UsageError, match="cannot read duration"):
        parse_duration(text)


def test_round_trip_through_yaml(tmp_path):
    cfg = RunConfig.from_dict({"model": {"cell": "gru", "hidden": 48}, "train": {"time_budget": "2m"}})
    assert cfg.train.time_budget == 120  # durations in YAML are parsed
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    again = RunConfig.from_dict(load_yaml(p))
    assert again == cfg


def test_merge_lets_flags_win_and_ignores_unset_flags():
    base = {"model": {"hidden": 24, "cell": "gru"}, "train": {"lr": 0.1}}
    merged = merge(base, {"model": {"hidden": 48, "cell": None}, "data": {"seq_len": 8}})
    assert merged == {"model": {"hidden": 48, "cell": "gru"}, "train": {"lr": 0.1}, "data": {"seq_len": 8}}
    assert base["model"]["hidden"] == 24  # input untouched


@pytest.mark.parametrize(
    "d, message",
    [
        ({"model": {"hiden": 3}}, "unknown setting model.hiden"),
        ({"modle": {}}, "unknown config section 'modle'"),
        ({"model": [1, 2]}, "must be a mapping"),
        ({"model": {"cell": "transformer"}}, "--cell must be one of lstm, gru, rnn"),
        ({"tokenizer": {"level": "byte"}}, "--level must be one of"),
        ({"model": {"dropout": 1.0}}, "--dropout must be in [0, 1)"),
        ({"data": {"val_fraction": 1.0}}, "--val-fraction"),
        ({"data": {"batching": "shuffled"}}, "--batching"),
        ({"train": {"max_steps": 0}}, "--max-steps must be a finite number > 0"),
        ({"train": {"precision": "fp8"}}, "--precision"),
        ({"train": {"time_budget": "soon"}}, "cannot read duration"),
    ],
)
def test_invalid_settings_are_usage_errors(d, message):
    with pytest.raises(UsageError) as e:
        RunConfig.from_dict(d)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "d",
    [
        {"model": {"hidden": "big"}},
        {"train": {"max_steps": [10]}},
        {"train": {"lr": "fast"}},
        {"data": {"seq_len": {"a": 1}}},
    ],
)
def test_wrongly_typed_yaml_values_are_usage_errors(d):
    """A YAML value of the wrong type is a user mistake like any other: a UsageError, not a TypeError."""
    with pytest.raises(UsageError):
        RunConfig.from_dict(d)


def test_load_yaml_errors(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(UsageError, match="mapping"):
        load_yaml(scalar)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}
