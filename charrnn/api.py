"""The Python API: ``load`` a checkpoint into a ``CharRNN`` that samples and scores, and ``train``.

    import charrnn
    result = charrnn.train("shakespeare.txt", time_budget="90s")   # progress shows where you watch
    result.plot()                               # its loss curves: a Figure, inline in a notebook
    model = result.load()                       # or charrnn.load("checkpoints/shakespeare")
    print(model.sample("ROMEO:", length=200, temperature=0.7, seed=1))
    for piece in model.stream("JULIET:", length=200):
        print(piece, end="", flush=True)

The CLI is a formatting layer over these calls: the same seed gives the same text from Python
and from the shell. Errors a user can fix are ``CharrnnError`` (exit code 1) or ``UsageError``
(exit code 2), each with a one-line message.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charrnn.config import SampleConfig
from charrnn.data.records import encode_record, prompt_ids
from charrnn.errors import CharrnnError, UsageError
from charrnn.sampling.curate import Draw, Sample
from charrnn.sampling.engine import Engine

if TYPE_CHECKING:
    from charrnn.evaluate import LineScore, Score
    from charrnn.training.report import Reporter


class CharRNN:
    """A trained model ready to sample and score; it keeps its engine (the loaded weights, the
    native kernel) between calls. Make one with ``charrnn.load``.

    Lengths count tokens (characters for a character model, words and spaces for a word model).
    ``temperature`` 0 is greedy; ``top_k``/``top_p`` restrict the draw; ``seed`` fixes the text
    (None: a random seed); ``stop`` ends a sample where that string first appears (not included).
    """

    def __init__(self, engine: Engine, device: str = "cpu", precision: str = "auto"):
        self.engine, self.device, self.precision = engine, device, precision
        self._info: dict[str, Any] | None = None
        self._card: dict[str, str] | None = None

    def __repr__(self) -> str:
        f = self._facts()
        shape = ", ".join(f[k] for k in ("model", "parameters", "vocabulary") if k in f)
        trained = f"trained on {f['corpus']}, {f['trained']}" if "corpus" in f else ""
        best = f"best val loss {f['best val loss']}" if "best val loss" in f else ""
        return "CharRNN(" + "; ".join(p for p in (shape, trained, best, str(self.path)) if p) + ")"

    def _repr_html_(self) -> str:
        from charrnn.notebook import card_html

        return card_html(
            "CharRNN",
            [*self._facts().items(), ("checkpoint", str(self.path))],
            "model.sample(prompt, length, temperature) writes; model.score(text) scores; model.info has the rest",
        )

    def _facts(self) -> dict[str, str]:
        """What the model shows itself as, read once from its checkpoint."""
        if self._card is None:
            tok = self.tokenizer
            facts = {}
            try:
                from charrnn.checkpoint import load

                ckpt = load(self.path, mmap=True)  # checked as every load is; the tensors are mapped
            except CharrnnError:  # the file went away since it was loaded: what is in memory
                ckpt = None
            if ckpt is not None:
                shape = ckpt["shape"]
                facts["model"] = f"{shape['cell'].upper()} {shape['layers']}x{shape['hidden']}"
                facts["parameters"] = f"{sum(t.numel() for t in ckpt['model'].values()):,} parameters"
            unit = "characters" if tok.level == "char" else "words"
            facts["vocabulary"] = f"{len(tok):,} {unit}" + (f" (records: {tok.records})" if self.is_records else "")
            if tok.labels:
                facts["labels"] = ", ".join(self.labels)
            if ckpt is not None:
                facts["corpus"] = str(ckpt.get("corpus"))
                facts["trained"] = f"{ckpt.get('step') or 0:,} steps, {ckpt.get('tokens_seen') or 0:,} tokens"
                best = ckpt.get("best_val_loss")
                if best is not None and math.isfinite(best):
                    scored = [r for r in ckpt.get("history") or [] if isinstance(r.get("val_loss"), (int, float))]
                    bits = min(scored, key=lambda r: r["val_loss"]).get("val_bits_per_char") if scored else None
                    facts["best val loss"] = f"{best:.4f} nats/token" + (
                        f" ({bits:.3f} bits/char)" if isinstance(bits, (int, float)) else ""
                    )
            self._card = facts
        return self._card

    @property
    def path(self) -> Path | None:
        """The checkpoint file the model came from."""
        return self.engine.path

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def info(self) -> dict[str, Any]:
        """What ``charrnn info --json`` prints: corpus, level, vocabulary, shape, parameters,
        steps, tokens seen, best validation loss (nats/token), the run's settings."""
        if self._info is None:
            from charrnn.checkpoint import describe, load

            self._info = describe(load(self.path))
        return self._info

    @property
    def is_records(self) -> bool:
        """True for a records model (``--records``): each sample is one whole record."""
        return self.tokenizer.end_id is not None

    @property
    def labels(self) -> list[str]:
        """The labels a labelled records model can generate."""
        return sorted(self.tokenizer.labels)

    def generate(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | None = None,
        n: int = 1,
        unknown: str = "error",
        label: str | None = None,
        shared: bool = False,
    ) -> Iterator[list[str]]:
        """``n`` samples side by side: yields a list of ``n`` strings per chunk, the text each
        sample gained (empty where it gained none), until every sample has ``length`` tokens or
        has met ``stop``. On a records model each sample is a fresh record that begins with
        ``prompt`` (of ``label``, for a labelled model) and ends at the model's own end of record.
        ``unknown``: what to do with prompt tokens the model never saw (error, skip, or unk for
        word models). ``shared``: step together with this model's other shared generations in one
        multi-stream kernel where it can (the same text; what the server does); from several
        threads they take turns at the kernel.
        Raises UsageError for settings out of range or an unknown label."""
        cfg = SampleConfig(length, temperature, top_k, top_p, n, resolve_seed(seed), self.precision)
        if stop == "":
            raise UsageError("--stop must not be empty; give the text that ends a sample, such as '\\n\\n'")
        return self.engine.texts(prompt_ids(self.tokenizer, prompt, unknown, label), cfg, stop, shared)

    def draw(
        self,
        n: int,
        prompt: str = "",
        length: int = 500,
        temperatures: Iterable[float] = (0.8,),
        novel: bool = False,
        unique: bool = False,
        scores: bool = False,
        max_attempts: int | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> Draw:
        """``n`` samples at each temperature, curated (``sampling.curate.draw``): ``novel`` drops
        samples that copy the training data (whole records, or 24-character windows of free
        text), ``unique`` drops repeats among the samples, and on a records model an empty record
        is never a sample; sampling goes on, in rounds with seeds derived from ``seed``, until
        ``n`` are kept or ``max_attempts`` (default 10 n + 100, at least 1) were drawn per
        temperature. ``scores``: give each sample its mean nats per character under the model.
        Raises UsageError for ``max_attempts`` < 1, CharrnnError when ``novel`` cannot read the
        training corpus again."""
        from charrnn.sampling.curate import draw

        index = self._novelty_index() if novel else None
        d = draw(
            lambda k, temp, round_seed: self._texts(k, prompt, length, temp, seed=round_seed, **options),
            n,
            prompt,
            list(temperatures),
            resolve_seed(seed),
            records=self.is_records,
            index=index,
            unique=unique,
            max_attempts=max_attempts,
        )
        if scores:
            self._score_samples(prompt, d.samples, options.get("label"), options.get("unknown", "error"))
        return d

    def _novelty_index(self):
        from charrnn.sampling.curate import load_or_build

        info = self.info
        data = (info.get("config") or {}).get("data") or {}
        return load_or_build(
            self.path.parent, data.get("corpus"), info.get("corpus_sha"), data.get("records"), data.get("label_field")
        )

    def _score_samples(self, prompt: str, samples: list[Sample], label: str | None, unknown: str) -> None:
        from charrnn.evaluate import score_sequences

        tok, head = self.tokenizer, prompt_ids(self.tokenizer, prompt, unknown, label)
        seqs, chars = [], []
        for s in samples:
            body = tok.encode(s.text, unknown="skip")
            end = [tok.end_id] if self.is_records else []
            seqs.append(head + body + end)
            chars.append(len(s.text) + len(end))
        # The prompt is context, not part of the sample: only the sample's own tokens are scored.
        skip = [len(head) - 1] * len(seqs)
        for s, (loss, k), c in zip(samples, score_sequences(self._model(), seqs, self._autocast(), skip=skip), chars):
            s.nats_per_char = round(loss / c, 6) if k and c else None

    def stream(self, prompt: str = "", length: int = 500, temperature: float = 0.8, **options: Any) -> Iterator[str]:
        """One sample's text as it is generated, piece by piece (the prompt not included). On a
        records model, the record whole, when it is drawn (it may take another draw: an empty
        record is never a sample)."""
        if self.is_records:
            yield from filter(None, self.samples(1, prompt, length, temperature, **options))
            return
        for pieces in self.generate(prompt, length, temperature, **options):
            if pieces[0]:
                yield pieces[0]

    def sample(self, prompt: str = "", length: int = 500, temperature: float = 0.8, **options: Any) -> str:
        """One sample: the text that follows ``prompt`` (the prompt not included)."""
        return "".join(self.stream(prompt, length, temperature, **options))

    def samples(
        self,
        n: int,
        prompt: str = "",
        length: int = 500,
        temperature: float = 0.8,
        *,
        novel: bool = False,
        unique: bool = False,
        **options: Any,
    ) -> list[str]:
        """``n`` samples drawn side by side (the prompt not included); sample i of a seed is the
        same text whatever ``n`` on one engine (see the README for when engines differ).
        ``novel``/``unique``, and every records model: curated as ``draw`` does (fewer than
        ``n`` when the attempts run out)."""
        if novel or unique or self.is_records:
            d = self.draw(n, prompt, length, (temperature,), novel=novel, unique=unique, **options)
            return [s.text for s in d.samples]
        return self._texts(n, prompt, length, temperature, **options)

    def _texts(self, n: int, prompt: str, length: int, temperature: float, **options: Any) -> list[str]:
        """``n`` samples side by side, as generated."""
        texts = [""] * n
        for pieces in self.generate(prompt, length, temperature, n=n, **options):
            texts = [t + p for t, p in zip(texts, pieces)]
        return texts

    def next_token_probs(
        self,
        prompt: str = "",
        k: int = 5,
        temperature: float = 1.0,
        unknown: str = "error",
        label: str | None = None,
    ) -> list[tuple[str, float]]:
        """The ``k`` most likely tokens to follow ``prompt`` (the top of the vocabulary when it has
        fewer), each with its probability under softmax(logits / ``temperature``), most likely
        first (ties: the lower token id first). The logits are those sampling draws from, so a
        greedy ``sample(prompt, 1, 0.0)`` is the first token here; temperature 0 gives it
        probability 1. Tokens sampling never emits (a word model's <unk>) have probability 0.
        An empty prompt is the start of a sample without one (on a records model: of a record,
        of ``label``). Raises UsageError for ``k`` < 1, a negative temperature or an unknown
        label, UnknownTokenError for prompt tokens the model never saw."""
        import numpy as np

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"k must be an integer >= 1, not {k!r}")
        if not 0 <= temperature < math.inf:
            raise UsageError(f"temperature must be a number >= 0, not {temperature}")
        ids = prompt_ids(self.tokenizer, prompt, unknown, label)
        z = np.asarray(self.engine.next_logits(ids), dtype=np.float64)  # (V,)
        z[self.engine.banned] = -np.inf
        if temperature < 1e-6:  # as the sampler: below this the draw is the argmax
            p = np.zeros_like(z)
            p[int(np.argmax(z))] = 1.0
        else:
            z = z / temperature
            p = np.exp(z - z.max())
            p /= p.sum()
        order = np.argsort(-p, kind="stable")[:k]
        vocab = self.tokenizer.vocab
        return [(vocab[i], float(p[i])) for i in order]

    def score(self, text: str, unknown: str = "auto") -> Score:
        """How well the model predicts ``text``: every token after the first scored once (a
        records model: each record of the text on its own, from its start to its end token).
        ``Score.loss`` is in nats/token; ``bits_per_char`` and ``perplexity`` follow. ``unknown``:
        tokens the model never saw: error, skip (left out, counted in ``Score.left_out``), unk;
        auto is unk for word models, else skip. Raises CharrnnError when fewer than two tokens
        are left to score, UnknownTokenError for unseen ones with 'error'."""
        import torch

        from charrnn.data.tokenizer import describe_left_out, scoring_mode
        from charrnn.evaluate import evaluate, score_records

        model, tok = self._model(), self.tokenizer
        mode = scoring_mode(tok, unknown)
        if self.is_records:
            from charrnn.data.records import parse

            data = (self.info.get("config") or {}).get("data") or {}
            recs = parse(text, data.get("records") or "lines", data.get("label_field"))
            labels = recs.labels or [None] * len(recs.texts)
            seqs, left_out = [], Counter()
            for t, l in zip(recs.texts, labels):
                seq, gone = encode_record(tok, t, l if l in tok.labels else None, mode)
                seqs.append(seq)
                left_out += gone
            score = score_records(model, seqs, tok.char_lengths(), self._autocast())
            score.left_out = left_out
            return score
        ids, left_out = tok.encode_counted(text, mode)
        if len(ids) < 2:
            gone = f" after leaving out {describe_left_out(left_out)} the model never saw" if left_out else ""
            raise CharrnnError(
                f"the text has {len(ids)} token(s){gone}: nothing to score (the first token has no context)"
            )
        score = evaluate(model, torch.tensor(ids, dtype=torch.long), tok.char_lengths(), autocast=self._autocast())
        score.left_out = left_out
        return score

    def score_file(self, inputs: str | Path | list[str | Path], unknown: str = "auto") -> Score:
        """``score`` for files of any size (several files, folders and ``-`` as for training,
        joined the same way): the text is tokenized in chunks into the token cache and read
        window by window, so memory stays bounded. A records model reads the text whole and
        scores it as ``score`` does. Raises UsageError for missing or non-UTF-8 files,
        CharrnnError when fewer than two tokens are left, UnknownTokenError for unseen ones."""
        from charrnn.data import corpus
        from charrnn.data.tokenizer import describe_left_out, scoring_mode
        from charrnn.evaluate import evaluate

        paths = [str(p) for p in inputs] if isinstance(inputs, list) else [str(inputs)]
        if self.is_records:
            return self.score(corpus.read_text(paths)[0], unknown)
        tok = self.tokenizer
        mode = scoring_mode(tok, unknown)
        data = corpus.load(paths, tokenizer=tok, unknown=mode)
        left_out = Counter(data.unknown) if mode == "skip" else Counter()
        if len(data.ids) < 2:
            gone = f" after leaving out {describe_left_out(left_out)} the model never saw" if left_out else ""
            raise CharrnnError(
                f"the text has {len(data.ids)} token(s){gone}: nothing to score (the first token has no context)"
            )
        score = evaluate(self._model(), data.ids, tok.char_lengths(), autocast=self._autocast())
        score.left_out = left_out
        return score

    def score_lines(self, lines: Iterable[str], unknown: str = "auto") -> list[LineScore]:
        """Each line on its own, as if it followed a newline (a records model: as a record, from
        its start token to its end token): its tokens and its end are scored. A line the model
        cannot score (too short) has ``loss`` None. ``unknown`` as for ``score``; each line's
        ``left_out`` counts its unseen tokens left out."""
        from charrnn.evaluate import score_lines

        return score_lines(self._model(), self.tokenizer, list(lines), unknown, self._autocast())

    def export(self, out: str | Path, format: str = "web", precision: str = "fp16") -> list[Path]:
        """Write this model as files that sample without charrnn, into the folder ``out``:
        ``web`` (a page and charrnn.js, for a browser or Node), ``onnx`` (model.onnx and
        tokenizer.json) or ``safetensors`` (model.safetensors). ``precision``: the stored weights,
        fp16 or fp32 (the same text as ``sample`` with ``precision="fp32"`` for a seed). Returns
        the files written. Needs the export extra. Raises UsageError for an unknown format or
        precision or an ``out`` that is a file, CharrnnError for a failed write. See docs/export.md."""
        from charrnn.export import export

        if self.path is None:
            raise CharrnnError("this model has no checkpoint file to export; save it with charrnn train first")
        return export(self.path, out, format, precision)

    def _model(self):
        return self.engine.model

    def _autocast(self):
        from charrnn.runtime.device import Env, pick_precision

        dev = self._model().emb.weight.device
        return Env(dev, pick_precision(self.precision, dev)).autocast()


def resolve_seed(seed: int | None) -> int:
    """``seed``, or a fresh random one (below 2^31) when it is None: the seed a sample reports."""
    return seed if seed is not None else secrets.randbelow(2**31)


def load(
    path: str | Path | None = None, device: str = "cpu", precision: str = "auto", step: int | None = None
) -> CharRNN:
    """A ``CharRNN`` from a checkpoint: a .pt file, a run folder (its best.pt, else last.pt), or
    None for the newest best.pt under ./checkpoints; ``step``: the run folder's checkpoint of the
    evaluation at that step (kept with ``keep``). ``device``: cpu, cuda, mps or auto.
    ``precision``: the sampling step's weights, auto (``sampling.engine.step_dtype``), fp32 or bf16; scoring
    autocasts as training did (auto), or as given. Raises CharrnnError when there is no readable
    checkpoint, UsageError for a device that is not there."""
    from charrnn.checkpoint import resolve
    from charrnn.config import DEVICES, check_choice

    check_choice("device", device, DEVICES)
    if step is not None:
        path = resolve(path, step)
    return CharRNN(Engine.open(path, device, precision), device, precision)


@dataclass
class TrainResult:
    """What ``train`` did. Losses are in nats/token on the validation split."""

    checkpoint: str
    """The best.pt of the run (last.pt when nothing was evaluated)."""
    out: str
    """The run folder."""
    steps: int
    tokens: int
    best_val_loss: float | None
    final_val_loss: float | None
    train_loss: float | None
    tokens_per_second: float
    train_seconds: float
    seconds: float
    parameters: int
    non_embedding_parameters: int
    precision: str
    device: str
    interrupted: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def load(self, device: str = "cpu", precision: str = "auto") -> CharRNN:
        return load(self.checkpoint, device, precision)

    def plot(self, x: str = "steps", width: int = 800, height: int = 500):
        """The run's loss curves as a matplotlib Figure, which a notebook shows inline: what
        ``charrnn plot OUT -o`` draws (``charrnn.plot(self)``; the plot extra)."""
        from charrnn.curves import plot

        return plot(self, x=x, width=width, height=height)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**d, **self.extra}

    def __repr__(self) -> str:
        ended = "interrupted, " if self.interrupted else "stopped early, " if self.extra.get("stopped_early") else ""
        return (
            f"TrainResult({ended}{self.steps:,} steps in {self.seconds:.1f}s, {self.tokens_per_second:,.0f} tokens/s; "
            f"{self._losses()}; {self.checkpoint})"
        )

    def _repr_html_(self) -> str:
        from charrnn.notebook import card_html

        return card_html(
            "TrainResult", self._facts(), "result.load() samples from it; result.plot() draws its loss curves"
        )

    def _losses(self) -> str:
        named = [
            (k, v)
            for k, v in (
                ("best val loss", self.best_val_loss),
                ("final", self.final_val_loss),
                ("train", self.train_loss),
            )
            if v is not None
        ]
        return ", ".join(f"{k} {v:.4f}" for k, v in named) + " nats/token" if named else "no loss measured"

    def _facts(self) -> list[tuple[str, str]]:
        """The run at a glance (label, text), from these figures and the run folder's files."""
        x = self.extra
        rows = [
            (
                "ended",
                "interrupted: resume=True continues it"
                if self.interrupted
                else "stopped early (patience)"
                if x.get("stopped_early")
                else "finished",
            )
        ]
        model = self._model_shape()
        rows.append(
            ("model", f"{model}, {self.parameters:,} parameters" if model else f"{self.parameters:,} parameters")
        )
        plan = x.get("plan")
        if plan:
            rows.append(
                (
                    "plan",
                    (
                        f"measured: {plan['layers']}x{plan['hidden']} {plan['precision']}, lr {plan['lr']:g}, "
                        f"{plan['tokens_per_second']:,} tokens/s, predicted val loss {plan['predicted_loss']:.3f}"
                    ),
                )
            )
        first = x.get("resumed_from_step") or 0
        rows.append(
            ("steps", (f"{first:,} to {self.steps:,}" if first else f"{self.steps:,}") + f", {self.tokens:,} tokens")
        )
        setup = x.get("setup_seconds")
        rows.append(
            (
                "time",
                f"{self.seconds:.1f}s"
                + (f" ({setup:.1f}s setting up, {self.train_seconds:.1f}s training)" if setup is not None else "")
                + f", {self.tokens_per_second:,.0f} tokens/s",
            )
        )
        loss = self._losses()
        bits = self._bits_per_nat()
        if bits and self.best_val_loss is not None:
            loss += f"; best {self.best_val_loss * bits:.3f} bits/char"
        rows.append(("loss", loss))
        rows.append(("checkpoint", self.checkpoint))
        return rows

    def _model_shape(self) -> str | None:
        """LSTM 2x512, from the run folder's config.yaml (None when it cannot be read)."""
        from charrnn.config import load_yaml

        try:
            m = load_yaml(Path(self.out) / "config.yaml").get("model") or {}
            return f"{str(m['cell']).upper()} {m['layers']}x{m['hidden']}"
        except (UsageError, OSError, KeyError, AttributeError):
            return None

    def _bits_per_nat(self) -> float | None:
        """Bits per character for one nat per token on this run's validation split."""
        from charrnn.curves import load_run

        try:
            return load_run(self.out).bits_per_nat
        except CharrnnError:
            return None


def train(
    corpus: str | Path | list[str | Path] | None = None,
    *,
    text: str | None = None,
    out: str | Path | None = None,
    time_budget: float | str | None = None,
    config: str | Path | dict | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    reporter: Reporter | None = None,
    started: float | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a model and return what happened; the checkpoints are in the run folder ``out``
    (default checkpoints/<corpus name>/).

    ``corpus``: a UTF-8 text file, a folder (read recursively), ``-`` for stdin, or a list of
    these (joined with a newline between files, see corpus.py), or None for the built-in default
    corpus; or pass the text itself as ``text``. The corpus is tokenized once into a cache that
    later runs reuse. ``time_budget``: seconds or '90s', '5m' for the whole
    call, tokenizing included. ``config``: a YAML file or a dict of sections, under ``settings``, which take any field
    of the run configuration by name (``hidden=512, lr=2e-3, max_steps=1000``; see config.py).
    ``resume`` continues the run in ``out`` (on the inputs it remembers unless given others);
    ``init_from`` fine-tunes a checkpoint. ``progress``: show the run where a person watches
    (``watching_reporter``): a live display in a notebook, a bar on a terminal's stderr, nothing
    when stderr is not a terminal; False: nothing. A ``reporter`` given wins over both. Raises
    UsageError for wrong settings, CharrnnError for failures (including a budget too short for
    one training step); a Ctrl-C (in a notebook: interrupting the kernel) saves last.pt and
    returns with ``interrupted`` set."""
    import time

    from charrnn.config import build_run_config, check_out
    from charrnn.training.loop import train as fit

    started = time.monotonic() if started is None else started
    settings.update(out=None if out is None else str(out), time_budget=time_budget)
    if corpus is not None:
        items = [str(c) for c in corpus] if isinstance(corpus, (list, tuple)) else [str(corpus)]
        if not items:
            raise UsageError("the list of corpus files is empty; give at least one file or folder")
        items = [c if c == "-" else str(Path(c).absolute()) for c in items]
        settings["corpus"] = items[0] if len(items) == 1 else items
    cfg = build_run_config(config, settings, resume=resume, init_from=init_from)
    check_out(cfg.train.out)
    if text is not None and corpus is not None:
        raise UsageError("give either a corpus file or text=, not both")
    if text is None and resume and corpus is None:
        from charrnn.training.run_folder import saved_corpus

        cfg.data.corpus = saved_corpus(cfg.train.out)
    shown = watching_reporter() if reporter is None and progress else None
    summary = fit(
        cfg,
        text,
        "corpus",
        inputs=cfg.data.corpus,
        resume=resume,
        overwrite=overwrite,
        init_from=None if init_from is None else str(init_from),
        reporter=reporter or shown,
        started=started,
    )
    known = {f.name for f in fields(TrainResult)}
    result = TrainResult(
        **{k: v for k, v in summary.items() if k in known}, extra={k: v for k, v in summary.items() if k not in known}
    )
    if hasattr(shown, "done"):  # the notebook display ends on the run's summary
        shown.done(result)
    return result


def watching_reporter() -> Reporter | None:
    """Progress for whoever watches ``train``: the notebook display (notebook.py) in a Jupyter
    kernel, the CLI's bar (console.RichReporter) when stderr is a terminal, else None (nothing
    printed: a script's log, a pipe, a test). Under torchrun only rank 0 shows it."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    from charrnn.notebook import NotebookReporter, in_notebook

    if in_notebook():
        return NotebookReporter()
    if sys.stderr is not None and sys.stderr.isatty():
        from charrnn.console import RichReporter

        return RichReporter()
    return None
