"""The measured-plan chooser: from given timings (nothing is timed here) it picks the shape and
precision that its loss model says reach the lowest loss in the time left."""

from __future__ import annotations

import pytest

from charrnn.training.plan.autosize import candidates, choose_plan, fit_loss_model, lr_for, predicted_loss

SHAPES = candidates(60) + candidates(600)


def timings(speed: float, bf16: float = 1.0, shapes=SHAPES) -> dict:
    """tokens/s per (layers, hidden, precision) of a machine ``speed`` times as fast as a 2-core
    CPU, falling with the size of the model (work per token ~ 4 * layers * hidden^2)."""
    out = {}
    for layers, hidden in shapes:
        fp32 = speed * 150_000 * (256 / hidden) ** 2 / layers
        out[(layers, hidden, "fp32")] = fp32
        out[(layers, hidden, "bf16")] = fp32 * bf16
    return out


def size(plan) -> int:
    return plan.layers * plan.hidden**2


def test_a_faster_machine_gets_a_bigger_model():
    slow = choose_plan(timings(0.5), 90, vocab=65)
    fast = choose_plan(timings(8.0), 90, vocab=65)
    assert size(fast) > size(slow)
    assert fast.predicted_loss < slow.predicted_loss


def test_a_longer_budget_gets_a_model_at_least_as_big():
    short = choose_plan(timings(1.0), 60, vocab=65)
    long = choose_plan(timings(1.0), 600, vocab=65)
    assert size(long) >= size(short) and size(long) > size(choose_plan(timings(1.0), 20, vocab=65))


@pytest.mark.parametrize("ratio, want", [(0.8, "fp32"), (0.99, "fp32"), (1.3, "bf16"), (6.0, "bf16")])
def test_bf16_only_where_it_measured_faster(ratio, want):
    assert choose_plan(timings(1.0, bf16=ratio), 90, vocab=65).precision == want


def test_bf16_alone_when_only_bf16_was_timed():
    only = {k: v for k, v in timings(1.0).items() if k[2] == "bf16"}
    assert choose_plan(only, 90, vocab=65).precision == "bf16"


def test_plan_carries_the_measured_rate_and_a_matching_lr():
    measured = timings(1.0, bf16=2.0)
    plan = choose_plan(measured, 90, vocab=65)
    assert plan.tokens_per_second == measured[(plan.layers, plan.hidden, "bf16")]
    assert plan.lr == lr_for(plan.hidden)
    assert str(plan.hidden) in plan.describe()


def test_a_step_limit_caps_the_tokens_the_plan_predicts_from():
    from charrnn.training.plan.autosize import embed_for, non_embedding_params

    hour = choose_plan(timings(1.0), 3600, vocab=65)
    steps_50 = 50 * 32 * 64
    capped = choose_plan(timings(1.0), 3600, vocab=65, max_tokens=steps_50)
    n = non_embedding_params(capped.layers, capped.hidden, 65, embed_for(capped.hidden, 65))
    assert capped.predicted_loss == pytest.approx(predicted_loss(n, steps_50))
    assert capped.predicted_loss > hour.predicted_loss + 0.5  # 100k tokens, not an hour's


def test_repeated_epochs_count_less_than_the_first():
    from charrnn.training.plan.autosize import REPEAT_DECAY, effective_tokens

    u = 1_000_000
    assert effective_tokens(0.7 * u, u) == 0.7 * u and effective_tokens(5 * u, None) == 5 * u
    worth = [effective_tokens(e * u, u) for e in (1, 2, 5, 10, 30, 100)]
    assert worth[0] == u and all(a < b for a, b in zip(worth, worth[1:]))  # more epochs still help...
    assert worth[2] - worth[1] < 3 * (worth[1] - worth[0])  # ...each less than the one before
    assert worth[-1] < u * (1 + REPEAT_DECAY)  # and no more than 1 + R* epochs' worth in all


def test_a_corpus_repeated_many_times_gets_a_bigger_model_than_fresh_data_would():
    """The 10-minute timings the probe took on the EPYC (bf16 tokens/s). Fresh data makes more
    steps worth most: 2x320 (or 2x256 where 2x320 timed slow). Tiny Shakespeare's 1,003,854
    training tokens would be read about 30 times: the model's size is worth more, 2x384 (it
    reached 1.3815 where 2x320 reached 1.3930, same seed; bench/RESULTS.md)."""
    seen = [
        {256: 98_699, 320: 73_337, 384: 55_163, 512: 34_498},
        {256: 78_549, 320: 59_942, 384: 45_839, 512: 29_724},
        {256: 97_418, 320: 59_451, 384: 45_978, 512: 32_517},
    ]
    for rates in seen:
        timed = {(2, h, "bf16"): r for h, r in rates.items()}
        fresh = choose_plan(timed, 595, 65, lambda h: 64)
        repeated = choose_plan(timed, 595, 65, lambda h: 64, unique=1_003_854)
        assert fresh.hidden in (256, 320) and repeated.hidden == 384
    # At 90 s (about 10 epochs) the one-layer plan stays 1x320 either way.
    timed = {(1, h, "bf16"): r for h, r in {192: 317_000, 256: 186_000, 320: 136_000, 384: 82_000}.items()}
    assert {choose_plan(timed, 85, 65, lambda h: 64, unique=u).hidden for u in (None, 1_003_854)} == {320}


def test_nothing_measured_is_an_error():
    with pytest.raises(ValueError):
        choose_plan({}, 90, vocab=65)


def test_the_loss_model_falls_with_size_and_tokens_and_its_fit_recovers_one():
    assert predicted_loss(1e6, 1e7) < predicted_loss(1e5, 1e7)
    assert predicted_loss(1e6, 1e8) < predicted_loss(1e6, 1e7)
    true = {"E": 1.2, "A": 20.0, "alpha": 0.3, "B": 80.0, "beta": 0.3}
    rows = [(n, d, predicted_loss(n, d, true)) for n in (1e5, 3e5, 1e6, 3e6) for d in (1e6, 5e6, 2e7)]
    model, rms = fit_loss_model(rows)
    assert rms < 0.01
    assert abs(predicted_loss(2e6, 1e7, model) - predicted_loss(2e6, 1e7, true)) < 0.02


# The probe times real steps: its tests check what it does with the timings, not the timings.


def _cfg(**model):
    from charrnn.config import RunConfig

    cfg = RunConfig()
    cfg.data.batch_size, cfg.data.seq_len = 4, 8
    for k, v in model.items():
        setattr(cfg.model, k, v)
    return cfg


TINY = [(1, 16), (1, 24), (2, 16)]


def test_a_corpus_small_for_the_model_gets_more_weight_decay_and_a_given_one_is_kept():
    from charrnn.training.plan.autosize import autosize

    big, small, given = _cfg(layers=2, hidden=320), _cfg(layers=2, hidden=320), _cfg(layers=2, hidden=320)
    given.train.weight_decay = 0.05
    big, _ = autosize(big, n_train=10_000_000, vocab_size=65, device="cpu")
    small, _ = autosize(small, n_train=1_000_000, vocab_size=65, device="cpu")  # Tiny Shakespeare's size
    given, _ = autosize(given, n_train=1_000_000, vocab_size=65, device="cpu")
    assert (big.train.weight_decay, small.train.weight_decay, given.train.weight_decay) == (0.1, 0.2, 0.05)
    assert (big.model.dropout, small.model.dropout) == (0.0, 0.1)  # the same rule turns dropout on
    # A run that stops after a few passes over the small corpus does not overfit: neither is
    # added, whether the passes come from a measured plan or from a step limit.
    few, steps, many = _cfg(layers=2, hidden=320), _cfg(layers=2, hidden=320), _cfg(layers=2, hidden=320)
    few, _ = autosize(few, n_train=1_000_000, vocab_size=65, device="cpu", epochs=10)  # a 90 s run's passes
    steps.train.max_steps = 1000  # 1,000 steps of 4 x 8 tokens: a thirtieth of a pass
    steps, _ = autosize(steps, n_train=1_000_000, vocab_size=65, device="cpu")
    many.train.epochs = 40
    many, _ = autosize(many, n_train=1_000_000, vocab_size=65, device="cpu")
    assert [(c.model.dropout, c.train.weight_decay) for c in (few, steps, many)] == [(0.0, 0.1), (0.0, 0.1), (0.1, 0.2)]


def test_probe_times_candidates_and_returns_a_plan():
    import torch

    from charrnn.runtime.device import Env
    from charrnn.training.plan import probe

    cfg, env = _cfg(), Env(torch.device("cpu"), "fp32")
    rng = torch.get_rng_state()
    plan = probe.plan_run(cfg, env, vocab=20, seconds_left=60, shapes=TINY)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's random state is untouched
    assert (plan.layers, plan.hidden) in TINY and plan.precision == "fp32"
    assert (cfg.model.layers, cfg.model.hidden, cfg.train.lr) == (None, None, None)  # the config is left as it was
    assert set(plan.measured) <= {(l, h, "fp32") for l, h in TINY} and len(plan.measured) >= 1


def test_the_rate_is_the_one_for_the_shape_that_runs():
    """A step-limited CPU run gets the table's two 320-wide layers at their rate; given a width or
    one layer, it gets the rate of what runs: a wider layer a lower one."""
    from charrnn.training.plan.autosize import autosize, lr_for

    given = _cfg(), _cfg(layers=1), _cfg(hidden=512)
    for cfg in given:
        cfg.train.max_steps = 100
    table, one, wide = (autosize(cfg, n_train=10_000_000, vocab_size=65, device="cpu")[0] for cfg in given)
    assert (table.model.layers, table.model.hidden, table.train.lr) == (2, 320, lr_for(320))
    assert (one.model.layers, one.model.hidden, one.train.lr) == (1, 320, lr_for(320))
    assert (wide.model.layers, wide.model.hidden, wide.train.lr) == (2, 512, lr_for(512))
    assert lr_for(512) < lr_for(320) and lr_for(64) == lr_for(128)  # narrow layers: the cap


def test_timing_a_shape_whose_steps_take_seconds_stops_after_one_timed_step(monkeypatch):
    """A big shape given in full costs the probe two of its steps (a warm-up and one timed), not six."""
    import torch

    from charrnn.training.plan import probe

    readings = []

    def clock():  # every step appears to take 10 s
        readings.append(10.0 * len(readings))
        return readings[-1]

    monkeypatch.setattr(probe.time, "perf_counter", clock)
    rate = probe.tokens_per_second(1, 16, 8, 20, 4, 8, "fp32", torch.device("cpu"), steps=5)
    assert len(readings) == 3 and rate == 4 * 8 / 10.0  # the warm-up's start, the timed step's start and end


def test_flags_override_the_probe():
    import torch

    from charrnn.runtime.device import Env
    from charrnn.training.plan import probe

    cfg = _cfg(hidden=24)
    cfg.train.lr = 0.5
    plan = probe.plan_run(cfg, Env(torch.device("cpu"), "fp32"), vocab=20, seconds_left=60, shapes=TINY)
    assert plan.hidden == 24 and plan.lr == 0.5
    # A shape given in full is still timed (its passes over the corpus set its regularisation),
    # and only that shape: here one the candidates lack.
    given = _cfg(layers=2, hidden=40)
    plan = probe.plan_run(
        given, Env(torch.device("cpu"), "fp32"), vocab=20, seconds_left=60, shapes=TINY, n_train=5_000
    )
    assert (plan.layers, plan.hidden) == (2, 40) and set(plan.measured) == {(2, 40, "fp32")}
    assert plan.epochs > 0
    short = _cfg()
    assert probe.plan_run(short, Env(torch.device("cpu"), "fp32"), vocab=20, seconds_left=5, shapes=TINY) is None


def test_candidates_follow_the_budget_and_the_loss_model_fits_the_sweeps():
    import json
    from pathlib import Path

    from charrnn.training.plan.autosize import LOSS_MODEL, TWO_LAYERS_BEYOND

    assert {l for l, _ in candidates(90)} == {1} and {l for l, _ in candidates(TWO_LAYERS_BEYOND + 1)} == {2}
    rows = Path(__file__).parents[1] / "bench" / "sweeps" / "loss_vs_tokens.jsonl"
    for r in map(json.loads, rows.read_text().splitlines()):
        if r["layers"] == 1:
            assert (
                abs(predicted_loss(r["params"], r["tokens"], LOSS_MODEL, r["unique_tokens"]) - r["val_loss"]) < 0.03
            ), r


def test_the_probe_keeps_bf16_in_the_running_when_it_loses_only_at_narrow_shapes(monkeypatch):
    """An EPYC without AMX: fp32 wins at 128 units, bf16 from 256 on. Both stay timed until bf16
    wins clearly, then fp32 is dropped; the plan takes bf16 where it was faster."""
    import torch

    from charrnn.training.plan import probe

    def fake(layers, hidden, embed, vocab, batch, seq, precision, device, **kw):
        fp32 = 4e7 / hidden
        return fp32 * (0.8 if hidden < 256 else 2.0) if precision == "bf16" else fp32

    monkeypatch.setattr(probe, "tokens_per_second", fake)
    shapes = [(1, 128), (1, 192), (1, 256), (1, 320), (1, 384)]
    measured = probe.measure(["bf16", "fp32"], 65, lambda h: 64, 32, 64, torch.device("cpu"), 90.0, shapes, limit=60)
    assert (1, 128, "fp32") in measured and (1, 192, "bf16") in measured and (1, 256, "fp32") in measured
    assert (1, 320, "fp32") not in measured and (1, 320, "bf16") in measured
    plan = choose_plan(measured, 90.0, 65, lambda h: 64)
    assert plan.hidden >= 256 and plan.precision == "bf16"


def test_the_probe_times_with_one_thread_while_one_thread_wins(monkeypatch):
    import torch

    from charrnn.training.plan import probe

    timed = []

    def fake(layers, hidden, embed, vocab, batch, seq, precision, device, **kw):
        n = torch.get_num_threads()
        timed.append((hidden, n))
        return 1e7 / hidden * (1.5 if n == 1 and hidden <= one_thread_wins_to else 1.0)

    monkeypatch.setattr(probe, "tokens_per_second", fake)
    before = torch.get_num_threads()
    shapes = [(1, 128), (1, 192), (1, 256), (1, 320)]
    try:
        torch.set_num_threads(2)
        # Quiet cores: one thread wins only at the narrowest shape, and is not timed past the next.
        one_thread_wins_to = 128
        measured = probe.measure(["fp32"], 65, lambda h: 64, 32, 64, torch.device("cpu"), 600.0, shapes, limit=60)
        assert measured == {(1, h, "fp32"): 1e7 / h * (1.5 if h == 128 else 1.0) for _, h in shapes}
        assert sorted(timed) == sorted([(128, 2), (128, 1), (192, 2), (192, 1), (256, 2), (320, 2)])  # in any order
        assert torch.get_num_threads() == 2
        # A busy neighbour: one thread wins everywhere, and every shape is timed with both.
        timed.clear()
        one_thread_wins_to = 10_000
        measured = probe.measure(["fp32"], 65, lambda h: 64, 32, 64, torch.device("cpu"), 600.0, shapes, limit=60)
        assert measured == {(1, h, "fp32"): 1.5e7 / h for _, h in shapes}
        assert sorted(timed) == sorted((h, n) for _, h in shapes for n in (1, 2)) and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_probe_times_each_candidate_with_the_dropout_and_clipping_the_run_will_use(monkeypatch):
    """A shape is timed as a short run trains it (no dropout), and again with dropout where the
    passes over the corpus that its speed buys call for it; the slower figure is the one kept."""
    import torch

    from charrnn.runtime.device import Env
    from charrnn.training.plan import probe
    from charrnn.training.plan.autosize import dropout_for, regularised, weight_decay_for

    timed, clips = [], set()
    speed = 1e6

    def fake(layers, hidden, embed, vocab, batch, seq, precision, device, steps=3, dropout=0.0, grad_clip=5.0):
        timed.append((hidden, dropout))
        clips.add(grad_clip)
        return speed / hidden * (0.9 if dropout else 1.0)

    monkeypatch.setattr(probe, "tokens_per_second", fake)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # one timing per shape and dropout
    shapes = [(1, 64), (1, 256), (1, 512)]
    # 60 s at these speeds is a few passes over 200,000 tokens at most: no shape needs dropout.
    plan = probe.plan_run(
        _cfg(), Env(torch.device("cpu"), "fp32"), vocab=65, seconds_left=60, shapes=shapes, n_train=200_000
    )
    assert sorted(timed) == [(64, 0.0), (256, 0.0), (512, 0.0)]
    assert not regularised(200_000, 1, plan.hidden, 64 if plan.hidden > 64 else 32, 65, plan.epochs)
    # 100x the speed on a tenth of the corpus: thousands of passes, so the shapes small for the
    # corpus are timed again with the dropout they will train with, and that speed is kept.
    timed.clear()
    speed = 1e8
    plan = probe.plan_run(
        _cfg(), Env(torch.device("cpu"), "fp32"), vocab=65, seconds_left=60, shapes=shapes, n_train=20_000
    )
    own = {h: dropout_for(20_000, 1, h, 32 if h == 64 else 64, 65, epochs=1000) for _, h in shapes}
    assert own == {64: 0.1, 256: 0.2, 512: 0.2}
    assert sorted(timed) == [(64, 0.0), (64, 0.1), (256, 0.0), (256, 0.2), (512, 0.0), (512, 0.2)]
    assert plan.measured[(1, 512, "fp32")] == 0.9 * speed / 512 and plan.epochs > 100
    # The passes decided on are the ones autosize gets: the same dropout and weight decay follow.
    assert dropout_for(20_000, 1, plan.hidden, 64, 65, plan.epochs) == own[plan.hidden]
    assert weight_decay_for(20_000, 1, plan.hidden, 64, 65, plan.epochs) == 0.2
    # A dropout given is the one timed, and the clipping given too.
    timed.clear()
    given = _cfg()
    given.model.dropout = 0.05
    given.train.grad_clip = 0.0
    probe.plan_run(given, Env(torch.device("cpu"), "fp32"), vocab=65, seconds_left=60, shapes=shapes, n_train=20_000)
    assert {d for _, d in timed} == {0.05} and clips == {_cfg().train.grad_clip, 0.0}


def test_a_gpu_run_times_two_layer_widths_at_gpu_batches_and_races_fp16_against_fp32(monkeypatch):
    """On a GPU the probe times the GPU widths the corpus can feed, with the GPU's batch shape,
    and fp16 against fp32; the plan takes the rate for the GPU's bigger batches. (No GPU is needed:
    the timing is faked.)"""
    import torch

    from charrnn.config import RunConfig
    from charrnn.runtime.device import Env
    from charrnn.training.plan import probe
    from charrnn.training.plan.autosize import GPU_LR_SCALE, GPU_WIDTHS

    timed = []

    def fake(layers, hidden, embed, vocab, batch, seq, precision, device, **kw):
        timed.append((layers, hidden, batch, seq, precision, device.type))
        return 2e8 / hidden * (2.5 if precision == "fp16" and hidden >= 384 else 1.0)

    monkeypatch.setattr(probe, "tokens_per_second", fake)
    cfg, env = RunConfig(), Env(torch.device("cuda"), "fp16")
    plan = probe.plan_run(cfg, env, vocab=65, seconds_left=600, max_hidden=768, n_train=1_000_000)
    assert {(l, h) for l, h, *_ in timed} == {(2, h) for h in GPU_WIDTHS if h <= 768}
    assert {(b, s, d) for _, _, b, s, _, d in timed} == {(64, 128, "cuda")}
    assert (2, 256, "fp32") in plan.measured and (2, 768, "fp32") not in plan.measured  # fp16 won clearly
    assert plan.precision == "fp16"
    assert plan.lr == pytest.approx(GPU_LR_SCALE * lr_for(plan.hidden)) and plan.layers == 2
    # fp32 where fp16 is no faster: the plan says so, and the run's scaler stays off.
    monkeypatch.setattr(probe, "tokens_per_second", lambda *a, **kw: 1e6)
    cfg, env = RunConfig(), Env(torch.device("cuda"), "fp16")
    assert probe.plan_run(cfg, env, vocab=65, seconds_left=600, n_train=1_000_000).precision == "fp32"
    # Under torchrun each rank keeps the corpus-sized default.
    assert probe.plan_run(RunConfig(), Env(torch.device("cuda"), "fp16", 0, 2), vocab=65, seconds_left=600) is None


def test_a_gpu_with_time_to_spare_on_a_small_corpus_takes_the_widest_layer_it_can_feed():
    """Minutes on a GPU read a small corpus hundreds of times: the repeated epochs are worth
    little, so width wins, up to what the corpus feeds (``corpus_hidden``), as the table did."""
    from charrnn.training.plan.autosize import GPU_WIDTHS, candidates, corpus_hidden

    rates = {(2, h, "fp16"): 1e10 / h**1.5 for h in GPU_WIDTHS}  # 2x512: 863k tokens/s
    assert candidates(600, "cuda") == [(2, h) for h in GPU_WIDTHS]
    cap = corpus_hidden(1_003_854)
    allowed = {k: v for k, v in rates.items() if k[1] <= cap}
    assert choose_plan(allowed, 600, 65, unique=1_003_854, device="cuda").hidden == cap == 512
    # Twenty seconds on a slow GPU buy fewer tokens than a 1024-wide layer needs.
    slow = {k: v / 50 for k, v in rates.items()}
    assert choose_plan(slow, 20, 65, unique=100_000_000, device="cuda").hidden < 1024


def test_a_gpu_run_without_a_probe_gets_the_gpu_batch_and_its_scaled_rate():
    from charrnn.config import RunConfig
    from charrnn.training.plan.autosize import GPU_LR_SCALE, autosize

    given, table = RunConfig(), RunConfig()
    given.model.hidden = 256
    given, _ = autosize(given, n_train=1_000_000, vocab_size=65, device="cuda")
    table, _ = autosize(table, n_train=1_000_000, vocab_size=65, device="cuda")  # no budget: sized by the corpus
    assert given.train.lr == pytest.approx(GPU_LR_SCALE * lr_for(256))
    assert (table.model.layers, table.model.hidden) == (2, 512)
    assert table.train.lr == pytest.approx(GPU_LR_SCALE * lr_for(512))
    assert (given.data.batch_size, given.data.seq_len) == (table.data.batch_size, table.data.seq_len) == (64, 128)
