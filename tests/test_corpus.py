"""Inputs (files, folders, stdin), the streaming tokenizers, the token cache, memmap batches and
bounded evaluation."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_corpus

from charrnn.data import cache, corpus
from charrnn.data.batches import RandomBatches, StreamBatches, split
from charrnn.data.tokenizer import WORD_RES, Tokenizer, UnknownTokenError
from charrnn.data.vectorized import WordIndexer
from charrnn.errors import UsageError
from charrnn.evaluate import evaluate
from charrnn.model.lm import RNNLM, ModelShape


def _write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("level", ["char", "word"])
def test_several_files_and_folders_join_in_order_with_a_newline(tmp_path, level):
    a = _write(tmp_path / "a.txt", make_corpus(3000, seed=1))
    books = tmp_path / "books"
    _write(books / "z.txt", "Zed's well-known 3.14 end")  # no final newline
    _write(books / "sub" / "b.txt", make_corpus(2000, seed=2))
    _write(books / "a.txt", "first in the folder\n")
    _write(books / ".hidden.txt", "never read")
    _write(books / ".git" / "x.txt", "never read")
    paths, name = corpus.resolve([str(a), str(books)])
    # Folders: recursively, sorted by path, hidden names skipped.
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "a.txt",
        "books/a.txt",
        "books/sub/b.txt",
        "books/z.txt",
    ]
    assert name == "a+1"
    c = corpus.load([str(a), str(books)], level=level)
    text = corpus.SEPARATOR.join(p.read_text(encoding="utf-8") for p in paths)
    expected = Tokenizer.build(text, level)
    assert c.tokenizer.vocab == expected.vocab
    assert c.ids.tolist() == expected.encode(text)
    assert c.ids.dtype == np.uint8 and isinstance(c.ids, np.memmap)
    assert c.chars == len(text) and not c.cached
    assert c.inputs == [str(a), str(books)]


def test_a_single_file_is_its_bytes_exactly(tmp_path):
    text = "\ufeffBOM\r\nCRLF\r\n\ttab 日本語 🐍"
    f = tmp_path / "one.txt"
    f.write_bytes(text.encode("utf-8"))
    c = corpus.load(str(f))
    assert c.tokenizer.decode(c.ids.tolist()) == text
    assert c.name == "one"
    import hashlib

    assert c.sha == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def test_cache_is_reused_and_noticed_when_a_file_changes(tmp_path):
    f = _write(tmp_path / "c.txt", make_corpus(4000, seed=3))
    first = corpus.load(str(f))
    again = corpus.load(str(f))
    assert not first.cached and again.cached
    assert np.array_equal(first.ids, again.ids) and again.sha == first.sha
    # Other settings are another entry.
    assert not corpus.load(str(f), level="word").cached
    assert corpus.load(str(f), level="word").cached
    # Same size, new content: the ids follow the file.
    text = f.read_text()
    changed = "X" + text[1:]
    f.write_text(changed)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = corpus.load(str(f))
    assert not c.cached and c.sha != first.sha
    assert c.tokenizer.decode(c.ids.tolist()) == changed
    # Touched but unchanged content: read again, and the cached entry for that content is used.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    assert corpus.load(str(f)).sha == c.sha


def test_the_cache_deletes_its_least_recently_used_entries_past_its_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    files = [_write(tmp_path / f"{i}.txt", make_corpus(3000 + 500 * i, seed=10 + i)) for i in range(4)]
    corpus.load(str(files[0]))
    corpus.load(str(files[1]))
    entries = lambda: sorted(p.name for p in cache.root().iterdir() if p.is_dir() and p.name != "index")  # noqa: E731
    assert len(entries()) == 2
    first_two = entries()
    os.utime(cache.root() / first_two[0], (1, 1))  # made the older one,
    os.utime(cache.root() / first_two[1], (2, 2))
    assert corpus.load(str(files[0])).cached  # then used: files[0]'s entry is now the newest
    # Room for about two entries: a third build deletes the least recently used (files[1]'s).
    monkeypatch.setenv("CHARRNN_TOKEN_CACHE_GB", str(2 * 5000 / 1e9))
    corpus.load(str(files[2]))
    assert len(entries()) == 2
    assert corpus.load(str(files[0])).cached and corpus.load(str(files[2])).cached
    assert not corpus.load(str(files[1])).cached  # rebuilt, and the same ids as before
    # A limit below one entry keeps the one just built.
    monkeypatch.setenv("CHARRNN_TOKEN_CACHE_GB", "0")
    c = corpus.load(str(files[3]))
    assert len(entries()) == 1 and corpus.load(str(files[3])).cached
    assert c.tokenizer.decode(c.ids.tolist()) == files[3].read_text()
    assert len(list((cache.root() / "index").glob("*.json"))) == 1  # the others pointed at deleted entries


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    f = _write(tmp_path / "d.txt", make_corpus(3000, seed=4))
    c = corpus.load(str(f))
    entry = next(
        p
        for p in cache.root().iterdir()
        if p.is_dir() and (p / "ids.bin").exists() and p.name.startswith(c_sha_prefix(f))
    )
    with open(entry / "ids.bin", "ab") as g:
        g.write(b"\0")  # wrong size
    again = corpus.load(str(f))
    assert not again.cached and np.array_equal(again.ids, c.ids)


def c_sha_prefix(f) -> str:
    import hashlib

    return hashlib.sha256(f.read_bytes()).hexdigest()[:24]


def test_given_vocabulary_unknown_tokens(tmp_path):
    f = _write(tmp_path / "u.txt", "abc abd xyz\n")
    tok = Tokenizer.build("abc abd\n", "char")
    with pytest.raises(UnknownTokenError, match="'x', 'y', 'z'; use --unknown skip"):
        corpus.load(str(f), tokenizer=tok, unknown="error")
    c = corpus.load(str(f), tokenizer=tok, unknown="skip")
    assert tok.decode(c.ids.tolist()) == "abc abd \n" and c.unknown == {"x": 1, "y": 1, "z": 1}
    words = Tokenizer.build("the cat sat\n", "word")
    w = corpus.load(str(_write(tmp_path / "w.txt", "the dog sat\n")), tokenizer=words, unknown="unk")
    assert words.decode(w.ids.tolist()) == "the <unk> sat\n" and w.unknown == {"dog": 1}


def test_inputs_that_cannot_be_read_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="corpus not found"):
        corpus.load(str(tmp_path / "missing.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no files"):
        corpus.load(str(tmp_path / "empty"))
    folder = tmp_path / "mixed"
    _write(folder / "a.txt", "fine\n")
    (folder / "b.bin").write_bytes(b"ok\xff\xfe")
    with pytest.raises(
        UsageError, match=r"b\.bin is not UTF-8 \(bad byte at offset 2; .*\); convert it, e\.g\. iconv -f "
    ):
        corpus.load(str(folder))


def test_stdin_among_the_inputs(tmp_path):
    f = _write(tmp_path / "s.txt", "from a file\n")
    code = (
        "import sys; from charrnn.data import corpus; c = corpus.load(['-', sys.argv[1]]); "
        "print(repr(c.tokenizer.decode(c.ids.tolist())), c.name)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(f)], input=b"piped\n", capture_output=True, env=os.environ)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == repr("piped\n\nfrom a file\n") + " stdin+1"


# ---- the word rule (issue 9, case 8) ----


def test_words_as_people_write_them_stay_whole():
    text = "I don't know: a well-known 3.14, 1,000 rock'n'roll it’s dogs' -- end.\n"
    tok = Tokenizer.build(text, "word")
    pieces = tok.split(text)
    for word in ["don't", "well-known", "3.14", "1,000", "rock'n'roll", "it’s", "dogs"]:
        assert word in pieces
    assert "'" in pieces and "-" in pieces and "." in pieces and "," in pieces
    assert "".join(pieces) == text
    # Old checkpoints keep the rule they were trained with.
    old = Tokenizer.from_dict({"level": "word", "vocab": tok.vocab})
    assert old.rule == 1 and "don't" not in old.split(text)
    assert Tokenizer.from_dict(tok.to_dict()).rule == 2


@pytest.mark.parametrize("rule", [1, 2])
def test_streamed_words_equal_the_regex_in_any_chunking(rule):
    rng = random.Random(rule)
    alphabet = list("ab1 2.,'’-_\n\t\u00e9\u4e2d\u00a0!") + ["  ", "3.14", "don't", "well-known"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        w = WordIndexer(rule)
        got, rest, i = [], "", 0
        while i < len(text):
            j = min(len(text), i + rng.randint(1, 12))
            ids, rest = w.feed(rest + text[i:j], final=j == len(text))
            got += [w.strings[k] for k in ids.tolist()]
            i = j
        assert got == WORD_RES[rule].findall(text), text


def test_word_vocabulary_from_streamed_counts_matches_the_tokenizer(tmp_path, monkeypatch):
    text = make_corpus(20000, seed=5) + "don't well-known 3.14\n" * 3
    f = _write(tmp_path / "w.txt", text)
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 997)  # many chunks
    for max_vocab, min_count in [(None, 1), (10, 1), (None, 40), (7, 3)]:
        c = corpus.load(str(f), level="word", max_vocab=max_vocab, min_count=min_count)
        ref = Tokenizer.build(text, "word", max_vocab, min_count)
        assert c.tokenizer.vocab == ref.vocab
        assert c.ids.tolist() == ref.encode(text, unknown="unk")


# ---- batches from the memmap ----


def test_memmap_batches_equal_in_memory_ones(tmp_path):
    f = _write(tmp_path / "m.txt", make_corpus(20000, seed=6))
    c = corpus.load(str(f))
    in_memory = torch.tensor(c.tokenizer.encode(f.read_text()), dtype=torch.uint8)
    mm_train, _ = split(c.ids, 0.1)
    mem_train, _ = split(in_memory, 0.1)
    for rank, world in [(0, 1), (0, 2), (1, 2)]:
        a, b = StreamBatches(mm_train, 4, 16, 7, rank, world), StreamBatches(mem_train, 4, 16, 7, rank, world)
        for step in [0, 1, 5, a.steps_per_epoch, 3 * a.steps_per_epoch + 2]:
            for u, v in zip(a.get(step), b.get(step)):
                assert torch.equal(torch.as_tensor(u), torch.as_tensor(v))
        r1, r2 = RandomBatches(mm_train, 4, 16, 7, rank, world), RandomBatches(mem_train, 4, 16, 7, rank, world)
        for step in range(4):
            assert all(torch.equal(u, v) for u, v in zip(r1.get(step)[:2], r2.get(step)[:2]))


# ---- bounded evaluation ----


def _model(vocab: int) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelShape(vocab, "lstm", 1, 24, 8, 0.0))


def test_bounded_evaluation_equals_the_full_one_when_the_split_is_small():
    ids = torch.randint(0, 20, (3000,), generator=torch.Generator().manual_seed(1))
    m, chars = _model(20), [1] * 20
    full = evaluate(m, ids, chars)
    for bound in (2999, 5000, 10**6):
        b = evaluate(m, ids.numpy().astype(np.uint8), chars, max_tokens=bound)
        assert (b.loss, b.tokens, b.chars) == (full.loss, full.tokens, full.chars)
    # One stream, no windows: the plain next-token loss.
    one = evaluate(m, ids, chars, batch_size=1)
    with torch.no_grad():
        logits, _, _ = m(ids[None, :-1])
    ref = torch.nn.functional.cross_entropy(logits[0], ids[1:]).item()
    assert one.loss == pytest.approx(ref, rel=1e-5)


def test_bounded_evaluation_scores_a_fixed_part_of_a_long_split():
    ids = torch.randint(0, 20, (40000,), generator=torch.Generator().manual_seed(2))
    m, chars = _model(20), [2] * 20
    a = evaluate(m, ids, chars, max_tokens=4096)
    b = evaluate(m, ids.numpy(), chars, max_tokens=4096)
    assert a.tokens == b.tokens == 4096 and a.chars == 2 * 4096
    assert a.loss == b.loss  # the same windows every time
    full = evaluate(m, ids, chars)
    assert full.tokens == 39999
    assert abs(a.loss - full.loss) < 0.05  # a fair sample of the whole


def test_fine_tuning_vocabulary_grows_from_streamed_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 1009)
    old_text = make_corpus(3000, seed=7)
    new_text = make_corpus(3000, seed=8) + "Quartz Zebra 3.14 don't " * 5 + "Ëlan 42\n"
    f = _write(tmp_path / "new.txt", new_text)
    for level, limits in [("char", (None, 1)), ("word", (None, 1)), ("word", (None, 3)), ("word", (40, 1))]:
        parent = Tokenizer.build(old_text, level)
        grown, added = parent.grown(new_text, *limits)
        c = corpus.load(str(f), tokenizer=parent, unknown="grow", max_vocab=limits[0], min_count=limits[1])
        assert c.tokenizer.vocab == grown.vocab and c.added == added, (level, limits)
        assert c.ids.tolist() == grown.encode(new_text, unknown="unk")


def test_score_file_equals_score_on_the_text(tmp_path, run_dir):
    import charrnn

    text = make_corpus(3000, seed=9)
    f = _write(tmp_path / "held_out.txt", text)
    m = charrnn.load(run_dir, precision="fp32")
    a, b = m.score(text, unknown="skip"), m.score_file(f, unknown="skip")
    assert (a.loss, a.tokens, a.chars) == pytest.approx((b.loss, b.tokens, b.chars), rel=1e-9)


# ---- training on several inputs, budgets ----


def _tiny(*extra):
    from conftest import TINY_FLAGS

    return [*TINY_FLAGS, "--quiet", *extra]


def test_train_on_files_and_folders_and_resume_remembers_them(tmp_path, cli):
    import json

    import yaml

    a = _write(tmp_path / "a.txt", make_corpus(3000, seed=10))
    books = tmp_path / "books"
    _write(books / "one.txt", make_corpus(3000, seed=11))
    _write(books / "two" / "two.txt", make_corpus(3000, seed=12))
    out = tmp_path / "run"
    r = cli("train", a, books, "--max-steps", "6", "--eval-every", "3", "--out", out, "--json", *_tiny())
    assert r.exit_code == 0, r.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())["data"]["corpus"]
    assert saved == [str(a), str(books)]
    r = cli("train", "--resume", "--out", out, "--max-steps", "9", "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 9
    # A file changed under the run: resuming is refused, as for one file.
    _write(books / "one.txt", make_corpus(3000, seed=13))
    r = cli("train", "--resume", "--out", out, "--max-steps", "12", "--quiet")
    assert r.exit_code == 2 and "corpus differs" in r.stderr


def test_the_library_takes_a_list_of_inputs(tmp_path):
    import charrnn

    a = _write(tmp_path / "a.txt", make_corpus(2500, seed=14))
    b = _write(tmp_path / "b.txt", make_corpus(2500, seed=15))
    result = charrnn.train(
        [a, b],
        out=tmp_path / "lib",
        max_steps=3,
        hidden=16,
        layers=1,
        embed=8,
        seq_len=16,
        batch_size=4,
        device="cpu",
        precision="fp32",
    )
    assert result.steps == 3


def test_each_evaluation_scores_at_most_eval_tokens(tmp_path, cli, corpus_file):
    import json

    out = tmp_path / "run"
    r = cli(
        "train", corpus_file, "--max-steps", "4", "--eval-every", "2", "--eval-tokens", "200", "--out", out, *_tiny()
    )
    assert r.exit_code == 0, r.stderr
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["val_tokens"] for rec in records] == [192, 192]  # 64 windows of 3 tokens
    out2 = tmp_path / "whole"
    r = cli("train", corpus_file, "--max-steps", "2", "--out", out2, *_tiny())
    whole = json.loads((out2 / "metrics.jsonl").read_text().splitlines()[-1])
    assert whole["val_tokens"] == len(corpus_file.read_text()) - int(len(corpus_file.read_text()) * 0.9 + 1e-9) - 1


def test_a_budget_that_cannot_buy_a_step_is_refused(tmp_path, cli, corpus_file):
    out = tmp_path / "run"
    r = cli("train", corpus_file, "--time-budget", "0.5s", "--out", out, "--json", *_tiny())
    assert r.exit_code == 1
    from conftest import assert_one_error_line

    assert_one_error_line(r.stderr, "no training step fits", "--time-budget")
    assert r.stdout == ""  # no summary, nothing "saved"
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()


def test_a_folder_of_python_source_skips_its_bytecode(tmp_path):
    """`charrnn train some_package/`: the .pyc files of __pycache__ are not text, and not the corpus."""
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "a.py").write_text("def a():\n    return 1\n")
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\x00\x00\xff\xfe")
    text, _ = corpus.read_text(str(pkg))
    assert text == "def a():\n    return 1\n"
