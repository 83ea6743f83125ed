"""Records: lists of names, titles or recipes (--records), whole records in training and in
sampling, curation (--novel, --unique), labels, and several temperatures in one command."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import TINY_RECORDS, assert_one_error_line, labelled_names

import charrnn
from charrnn.data.batches import RecordBatches
from charrnn.data.records import parse
from charrnn.data.tokenizer import END, Tokenizer
from charrnn.errors import UsageError

TINY = [
    "--hidden",
    "48",
    "--layers",
    "1",
    "--embed",
    "16",
    "--batch-size",
    "16",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--lr",
    "0.02",
    "--warmup-steps",
    "5",
    "--quiet",
]


def _names(n: int = 600, seed: int = 0) -> list[str]:
    """Made-up package-like names: syllables joined, some with a dash."""
    rng = random.Random(seed)
    syl = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "do"]
    out = set()
    while len(out) < n:
        name = "".join(rng.choice(syl) for _ in range(rng.randint(2, 4)))
        if rng.random() < 0.3:
            name += "-" + "".join(rng.choice(syl) for _ in range(rng.randint(1, 2)))
        out.add(name)
    return sorted(out)


@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    corpus = folder / "names.txt"
    corpus.write_text("\n".join(_names()) + "\n", encoding="utf-8")
    out = folder / "run"
    charrnn.train(
        corpus,
        out=out,
        records="lines",
        max_steps=150,
        eval_every=50,
        hidden=48,
        **TINY_RECORDS,
    )
    return corpus, out


def test_parse_modes(tmp_path):
    assert parse(" a \n\nb\n", "lines").texts == ["a", "b"]
    assert parse("one\ntwo\n\n\nthree\n", "paragraphs").texts == ["one\ntwo", "three"]
    r = parse('{"t": "x", "k": "A"}\n{"t": "y", "k": "B"}\n', "jsonl:t", "k")
    assert r.texts == ["x", "y"] and r.labels == ["A", "B"]
    r = parse('name,kind\nfoo,a\n"b,ar",b\n', "csv:name", "kind")
    assert r.texts == ["foo", "b,ar"] and r.labels == ["a", "b"]
    for bad, mode in [("not json\n", "jsonl:t"), ('{"u": 1}\n', "jsonl:t"), ("a,b\n1,2\n", "csv:c")]:
        with pytest.raises(UsageError):
            parse(bad, mode)
    with pytest.raises(UsageError, match="jsonl:text"):
        parse("x", "jsonl")


def test_batches_never_carry_a_record_into_the_next():
    """Every row of every batch holds one record: it begins at a chunk start with the state reset
    there, its targets are its own tokens then END, and padding is ignored."""
    tok = Tokenizer("char", list("abcdefgh")).with_records("lines")
    rng = random.Random(1)
    recs = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 30))) for _ in range(50)]
    seqs = [torch.tensor([tok.end_id] + tok.encode(r) + [tok.end_id]) for r in recs]
    T = 8
    b = RecordBatches(seqs, batch_size=4, seq_len=T, seed=3)
    seen: dict[int, list[int]] = {}
    rows: list[list[int]] = [[] for _ in range(4)]
    for step in range(b.steps_per_epoch):
        x, y, reset = b.get(step)
        for r in range(4):
            if reset[r]:
                if rows[r]:
                    seen.setdefault(len(seen), rows[r])
                rows[r] = []
            ys = [t for t in y[r].tolist() if t != -100]
            if ys:
                assert ys == y[r].tolist()[: len(ys)], "padding only at the end of a chunk"
            rows[r] += ys
            # END, when it is a target, is the last target of the row's record.
            if tok.end_id in ys:
                assert ys.index(tok.end_id) == len(ys) - 1
    for r in rows:
        if r:
            seen.setdefault(len(seen), r)
    got = sorted(tuple(v) for v in seen.values())
    want = sorted(tuple(tok.encode(r) + [tok.end_id]) for r in recs)
    assert got == want, "each record trained once per epoch, whole, as its own row"


def test_ranks_agree_on_steps_and_share_the_records():
    """Under torchrun every rank steps the same number of times an epoch (or the collective
    operations hang), and the ranks' rows together read each record once per epoch, from the
    flat (ids, lengths) form of the training split too; a batch depends on the step alone."""
    rng = random.Random(2)
    seqs = [torch.tensor([rng.randrange(9) for _ in range(rng.randint(2, 40))], dtype=torch.uint8) for _ in range(90)]
    flat, lengths = torch.cat(seqs), [len(s) for s in seqs]
    T, B, world = 8, 3, 2
    ranks = [RecordBatches((flat, lengths), batch_size=B, seq_len=T, seed=5, rank=r, world=world) for r in range(world)]
    n = ranks[0].steps_per_epoch
    assert all(b.steps_per_epoch == n for b in ranks)
    tokens = []
    for b in ranks:
        for step in range(n):
            x, y, reset = b.get(step)
            assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (B, T) and reset.shape == (B,)
            tokens += [t for t in y.flatten().tolist() if t != -100]
    assert sorted(tokens) == sorted(t for s in seqs for t in s[1:].tolist())
    again = RecordBatches((flat, lengths), batch_size=B, seq_len=T, seed=5, rank=1, world=world)
    for step in (7, 2 * ranks[1].steps_per_epoch + 3, 1):  # out of order, a later epoch, back again
        assert all(torch.equal(u, v) for u, v in zip(again.get(step), ranks[1].get(step)))


def test_samples_are_whole_records_one_per_line(cli, names_run):
    corpus, out = names_run
    model = charrnn.load(out)
    assert model.is_records and END in model.tokenizer.vocab
    r = cli("sample", "-c", out, "-N", "20", "--seed", "1", "--length", "60")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 20 and r.stdout.endswith("\n")
    assert all(0 < len(l) < 60 for l in lines), "each record ended on the model's own end of record"
    assert all(set(l) <= set("kalominerutavozipedo-") for l in lines)
    # A prompt begins the record; --json carries the score and the temperature.
    j = cli("sample", "-c", out, "-N", "5", "--seed", "2", "--prompt", "ka", "--json")
    objs = [json.loads(l) for l in j.stdout.splitlines()]
    assert len(objs) == 5 and all(o["text"].startswith("ka") and "\n" not in o["text"] for o in objs)
    assert all(o["nats_per_char"] > 0 and o["temperature"] == 0.8 for o in objs)


def test_novel_never_emits_a_training_record_and_unique_never_repeats(cli, names_run):
    corpus, out = names_run
    training = set(corpus.read_text().split())
    r = cli("sample", "-c", out, "-N", "200", "--seed", "4", "--temp", "0.6", "--novel", "--unique", "--json")
    assert r.exit_code == 0, r.stderr
    objs = [json.loads(l) for l in r.stdout.splitlines()]
    summary = objs.pop()["summary"]
    texts = [o["text"] for o in objs]
    assert len(texts) == 200 == summary["kept"]
    assert not training & set(texts), "no training record comes out"
    assert len(set(texts)) == len(texts)
    assert summary["drawn"] == 200 + summary["dropped_copies"] + summary["dropped_repeats"]
    assert summary["dropped_copies"] > 0, "a small model at a low temperature copies some names"
    assert "copies of the training data" in r.stderr
    # Without --novel the same model does write training names at this temperature.
    plain = charrnn.load(out).samples(200, temperature=0.6, seed=4)
    assert training & set(plain)
    # The API curates the same way.
    api = charrnn.load(out).samples(50, temperature=0.6, seed=4, novel=True, unique=True)
    assert len(api) == 50 and not training & set(api) and len(set(api)) == 50


def test_attempt_limit_is_reported(cli, names_run):
    _, out = names_run
    r = cli("sample", "-c", out, "-N", "50", "--temp", "0", "--unique", "--max-attempts", "20")
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1  # greedy writes one record, again and again
    assert "attempt limit" in r.stderr


def test_temperature_list_tags_each_sample(cli, names_run):
    _, out = names_run
    r = cli("sample", "-c", out, "-N", "3", "--temp", "0.5,0.8,1.1", "--json", "--seed", "5")
    assert r.exit_code == 0, r.stderr
    temps = [json.loads(l)["temperature"] for l in r.stdout.splitlines()]
    assert temps == [0.5] * 3 + [0.8] * 3 + [1.1] * 3
    bad = cli("sample", "-c", out, "--temp", "0.5,hot")
    assert bad.exit_code == 2
    assert_one_error_line(bad.stderr, "--temp")


def test_free_text_novelty_rule(corpus_text):
    """A sample sharing a 24-character anchored window with the corpus is a copy: spans of the
    corpus of 100 characters are caught (nearly always), texts not in the corpus are not."""
    from charrnn.sampling.curate import Index, text_hashes

    index = Index(text_hashes(corpus_text), "text")
    rng = random.Random(0)
    spans = [corpus_text[p : p + 100] for p in (rng.randrange(len(corpus_text) - 100) for _ in range(200))]
    assert sum(index.is_copy(s) for s in spans) >= 190
    words = corpus_text.split()
    fresh = [" ".join(rng.sample(words, 12)) for _ in range(200)]
    assert sum(index.is_copy(s) for s in fresh) <= 2
    assert not index.is_copy("short")


def test_novel_on_free_text_drops_copies(cli, tmp_path):
    corpus = tmp_path / "pangram.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 300, encoding="utf-8")
    out = tmp_path / "run"
    r = cli("train", corpus, "--out", out, "--max-steps", "120", "--seq-len", "32", *TINY)
    assert r.exit_code == 0, r.stderr
    r = cli(
        "sample", "-c", out, "-N", "2", "--temp", "0", "--length", "120", "--novel", "--max-attempts", "4", "--json"
    )
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])["summary"]
    assert summary == {"kept": 0, "drawn": 4, "dropped_copies": 4, "dropped_repeats": 0, "dropped_empty": 0}
    assert "attempt limit" in r.stderr
    # A changed corpus file cannot vouch for what the model was trained on.
    corpus.write_text("something else entirely\n" * 10, encoding="utf-8")
    r = cli("sample", "-c", out, "--novel")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "changed since", "--novel")


def test_labels_steer_generation(tmp_path):
    """Each label has an alphabet of its own: generating with a label writes only its letters."""
    corpus = tmp_path / "names.jsonl"
    corpus.write_text(labelled_names(500, seed=2, longest=8), encoding="utf-8")
    out = tmp_path / "run"
    charrnn.train(
        corpus,
        out=out,
        records="jsonl:name",
        label_field="kind",
        max_steps=120,
        hidden=32,
        **TINY_RECORDS,
        weight_decay=0.1,
    )  # 0.2, this small corpus's default, ties on val loss but leaked a letter in 600
    model = charrnn.load(out)
    assert model.labels == ["low", "up"]
    for label, letters in (("low", set("abcdef")), ("up", set("UVWXYZ"))):
        texts = model.samples(30, label=label, seed=1, length=20)
        chars = set("".join(texts))
        assert chars and chars <= letters, (label, chars)
    with pytest.raises(UsageError, match="low, up"):
        model.sample(label="mid")


def test_unknown_label_is_one_line_listing_the_known(cli, tmp_path):
    corpus = tmp_path / "c.csv"
    corpus.write_text("title,genre\n" + "".join(f"t{i % 7}x,{'ab'[i % 2]}\n" for i in range(200)), encoding="utf-8")
    out = tmp_path / "run"
    r = cli(
        "train", corpus, "--out", out, "--records", "csv:title", "--label-field", "genre", "--max-steps", "5", *TINY
    )
    assert r.exit_code == 0, r.stderr
    s = cli("sample", "-c", out, "--label", "c")
    assert s.exit_code == 2
    assert_one_error_line(s.stderr, "unknown label", "a, b")
    bad = cli("train", corpus, "--out", tmp_path / "r2", "--records", "csv:nope", "--max-steps", "5", *TINY)
    assert bad.exit_code == 2
    assert_one_error_line(bad.stderr, "no column 'nope'", "title")


def test_score_a_records_model_record_by_record(cli, names_run, tmp_path):
    corpus, out = names_run
    model = charrnn.load(out, precision="fp32")
    names = corpus.read_text().split()[:50]
    whole = model.score("\n".join(names) + "\n")
    assert whole.tokens == sum(len(n) + 1 for n in names)  # each name's characters and its end
    lines = model.score_lines(names)
    assert sum(l.loss * l.tokens for l in lines) / sum(l.tokens for l in lines) == pytest.approx(whole.loss, rel=1e-4)
    f = tmp_path / "cands.txt"
    f.write_text("kalomi\nzzqqxx\n", encoding="utf-8")
    r = cli("score", "--per-line", f, "-c", out, "--unknown", "skip")
    assert r.exit_code == 0, r.stderr
    losses = [float(l.split("\t")[0]) for l in r.stdout.splitlines()]
    assert losses[0] < losses[1], "a name like the training names is more typical"


def test_fine_tuning_a_records_model_keeps_records(tmp_path, names_run):
    _, parent = names_run
    more = tmp_path / "more.txt"
    more.write_text("\n".join(_names(200, seed=5)) + "\n", encoding="utf-8")
    result = charrnn.train(more, out=tmp_path / "child", init_from=parent, max_steps=5, device="cpu")
    child = result.load()
    assert child.is_records
    assert all("\n" not in s for s in child.samples(5, seed=1, length=40))


def test_a_batch_of_padding_only_has_a_finite_loss_and_no_gradient():
    """Under torchrun a rank's record streams can run out before another's: its batch is all
    padding, and its loss must be 0 (not NaN, which DDP would spread to every rank)."""
    from charrnn.model.lm import RNNLM, ModelShape

    model = RNNLM(ModelShape(10, "lstm", 1, 8, 4, 0.0))
    x = torch.zeros(2, 5, dtype=torch.long)
    y = torch.full((2, 5), -100)
    _, loss, _ = model(x, None, y)
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() and not p.grad.any() for p in model.parameters() if p.grad is not None)


def test_spaced_records_cover_at_most_the_limit_the_same_way_every_time():
    from charrnn.evaluate import spaced_records

    lengths = [3 + (i * 7) % 11 for i in range(1000)]
    assert spaced_records(lengths, None) == list(range(1000))
    assert spaced_records(lengths, 10**9) == list(range(1000))
    picked = spaced_records(lengths, 500)
    assert picked == spaced_records(lengths, 500)
    assert 0 < sum(lengths[i] - 1 for i in picked) <= 500
    assert picked[0] == 0 and picked[-1] > 900  # spread over the whole split, not its head
    assert spaced_records([40], 5) == [0]  # one record is the least an evaluation scores


def test_a_records_run_evaluates_a_bounded_part_of_its_validation_records(tmp_path):
    """Evaluations score evenly spaced validation records up to --eval-tokens; 0 scores all."""
    text = "\n".join(_names(800, seed=5)) + "\n"
    settings = dict(
        records="lines",
        max_steps=2,
        eval_every=1,
        hidden=16,
        layers=1,
        embed=8,
        batch_size=8,
        device="cpu",
        precision="fp32",
        sample_every=0,
    )

    def val_tokens(limit, out):
        charrnn.train(text=text, out=tmp_path / out, eval_tokens=limit, **settings)
        rows = [json.loads(l) for l in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
        assert len({r["val_tokens"] for r in rows}) == 1  # the same records every time
        return rows[-1]["val_tokens"]

    everything = val_tokens(0, "all")
    assert everything == sum(len(n) + 1 for n in _names(800, seed=5)[720:])  # each name and its END
    assert 0 < val_tokens(100, "some") <= 100
    assert val_tokens(None, "default") == everything  # a small split is scored whole by default


def test_validation_of_records_runs_without_dropout(cli, tmp_path):
    """Weights that do not move score the same at every evaluation: a records run's validation
    records are scored in eval mode, not with the training dropout's random masks."""
    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(_names(300)) + "\n")
    out = tmp_path / "run"
    flags = [f for f in TINY if f not in ("--lr", "0.02")]
    r = cli(
        "train",
        corpus,
        "--records",
        "lines",
        *flags,
        "--dropout",
        "0.5",
        "--layers",
        "2",
        "--lr",
        "1e-20",
        "--max-steps",
        "12",
        "--eval-every",
        "3",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.stderr
    losses = [json.loads(line)["val_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and len(set(losses)) == 1, losses


def test_one_record_per_line_whatever_the_temperature(cli, names_run):
    """A model of one record per line never writes a newline inside a record (none of its
    training records holds one), and an empty record is never a sample: -N 300 is 300 lines."""
    _, run = names_run
    r = cli("sample", "-c", run, "-N", "300", "--temp", "3", "--seed", "1", "--length", "40")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[-1] == "" and len(lines) == 301, r.stdout[:500]
    assert all(line.strip() for line in lines[:-1])
    curated = cli("sample", "-c", run, "-N", "50", "--temp", "3", "--seed", "2", "--novel", "--unique", "--json")
    texts = [json.loads(line)["text"] for line in curated.stdout.splitlines() if "summary" not in line]
    assert len(texts) == 50 and all(t.strip() and "\n" not in t for t in texts)


def test_empty_records_are_drawn_again_and_counted(names_run):
    """At a temperature that often ends a record at once, the empties are dropped, counted, and
    replaced; the sample a seed gives is never empty."""
    _, run = names_run
    model = charrnn.load(run)
    d = model.draw(200, length=3, temperatures=(50.0,), seed=3)
    assert len(d.samples) == 200 and all(s.text.strip() for s in d.samples)
    assert d.dropped_empty > 0 and d.drawn == 200 + d.dropped_empty
    assert all(model.sample(length=3, temperature=50.0, seed=s).strip() for s in range(20))
