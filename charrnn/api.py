"""The Python API: ``load`` a checkpoint into a ``CharRNN`` that samples and scores, and ``train``.

    import charrnn
    result = charrnn.train("shakespeare.txt", time_budget="90s")
    model = result.load()                       # or charrnn.load("checkpoints/shakespeare")
    print(model.sample("ROMEO:", length=200, temperature=0.7, seed=1))
    for piece in model.stream("JULIET:", length=200):
        print(piece, end="", flush=True)

The CLI is a formatting layer over these calls: the same seed gives the same text from Python
and from the shell. Errors a user can fix are ``CharrnnError`` (exit code 1) or ``UsageError``
(exit code 2), each with a one-line message.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from charrnn.config import SampleConfig
from charrnn.errors import CharrnnError, UsageError
from charrnn.sampling.engine import Engine
from charrnn.sampling.text import decode_streams
from charrnn.tokenizer import encode_prompt

if TYPE_CHECKING:
    from charrnn.evaluate import LineScore, Score
    from charrnn.training.loop import Reporter


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

    def generate(
        self, prompt: str = "", length: int = 500, temperature: float = 0.8, top_k: int | None = None,
        top_p: float | None = None, seed: int | None = None, stop: str | None = None, n: int = 1,
        unknown: str = "error",
    ) -> Iterator[list[str]]:
        """``n`` samples side by side: yields a list of ``n`` strings per chunk, the text each
        sample gained (empty where it gained none), until every sample has ``length`` tokens or
        has met ``stop``. ``unknown``: what to do with prompt tokens the model never saw (error,
        skip, or unk for word models). Raises UsageError for settings out of range."""
        cfg = SampleConfig(length, temperature, top_k, top_p, n, _seed(seed), self.precision)
        ids = encode_prompt(self.tokenizer, prompt, unknown)
        return decode_streams(self.engine.chunks(ids, cfg), self.tokenizer.vocab, n, stop)

    def stream(self, prompt: str = "", length: int = 500, temperature: float = 0.8, **options: Any) -> Iterator[str]:
        """One sample's text as it is generated, piece by piece (the prompt not included)."""
        for pieces in self.generate(prompt, length, temperature, **options):
            if pieces[0]:
                yield pieces[0]

    def sample(self, prompt: str = "", length: int = 500, temperature: float = 0.8, **options: Any) -> str:
        """One sample: the text that follows ``prompt`` (the prompt not included)."""
        return "".join(self.stream(prompt, length, temperature, **options))

    def samples(self, n: int, prompt: str = "", length: int = 500, temperature: float = 0.8, **options: Any) -> list[str]:
        """``n`` samples drawn side by side; sample i of a seed is the same text whatever ``n``
        on one engine (see the README for when engines differ)."""
        texts = [""] * n
        for pieces in self.generate(prompt, length, temperature, n=n, **options):
            texts = [t + p for t, p in zip(texts, pieces)]
        return texts

    def score(self, text: str, unknown: str = "auto") -> Score:
        """How well the model predicts ``text``: every token after the first scored once.
        ``Score.loss`` is in nats/token; ``bits_per_char`` and ``perplexity`` follow. ``unknown``:
        tokens the model never saw: error, skip, unk; auto is unk for word models, else error.
        Raises CharrnnError when the text has fewer than two tokens, UnknownTokenError for unseen ones."""
        import torch

        from charrnn.evaluate import evaluate

        model, tok = self._model(), self.tokenizer
        ids = torch.tensor(tok.encode(text, unknown=unknown), dtype=torch.long)
        if len(ids) < 2:
            raise CharrnnError(f"the text has {len(ids)} token(s): nothing to score (the first token has no context)")
        return evaluate(model, ids, tok.char_lengths(), autocast=self._autocast())

    def score_lines(self, lines: Iterable[str], unknown: str = "auto") -> list[LineScore]:
        """Each line on its own, as if it followed a newline: its tokens and closing newline are
        scored. A line the model cannot score (too short) has ``loss`` None."""
        from charrnn.evaluate import score_lines

        return score_lines(self._model(), self.tokenizer, list(lines), unknown, self._autocast())

    def _model(self):
        return self.engine.model

    def _autocast(self):
        from charrnn.device import Env, pick_precision

        dev = self._model().emb.weight.device
        return Env(dev, pick_precision(self.precision, dev)).autocast()


def _seed(seed: int | None) -> int:
    return seed if seed is not None else secrets.randbelow(2**31)


def load(path: str | Path | None = None, device: str = "cpu", precision: str = "auto") -> CharRNN:
    """A ``CharRNN`` from a checkpoint: a .pt file, a run folder (its best.pt, else last.pt), or
    None for the newest best.pt under ./checkpoints. ``device``: cpu, cuda, mps or auto.
    ``precision``: the sampling step's weights, auto (bf16 where faster), fp32 or bf16; scoring
    autocasts as training did (auto), or as given. Raises CharrnnError when there is no readable
    checkpoint, UsageError for a device that is not there."""
    from charrnn.config import DEVICES, check_choice

    check_choice("device", device, DEVICES)
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

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**d, **self.extra}


def train(
    corpus: str | Path | None = None,
    *,
    text: str | None = None,
    out: str | Path | None = None,
    time_budget: float | str | None = None,
    config: str | Path | dict | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    started: float | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a model and return what happened; the checkpoints are in the run folder ``out``
    (default checkpoints/<corpus name>/).

    ``corpus``: a UTF-8 text file, ``-`` for stdin, or None for the built-in default corpus;
    or pass the text itself as ``text``. ``time_budget``: seconds or '90s', '5m' for the whole
    call. ``config``: a YAML file or a dict of sections, under ``settings``, which take any field
    of the run configuration by name (``hidden=512, lr=2e-3, max_steps=1000``; see config.py).
    ``resume`` continues the run in ``out``; ``init_from`` fine-tunes a checkpoint. Progress
    goes to ``reporter`` (silent by default). Raises UsageError for wrong settings, CharrnnError
    for failures; a Ctrl-C saves last.pt and returns with ``interrupted`` set."""
    from charrnn.config import build_run_config
    from charrnn.data import read_corpus
    from charrnn.training.loop import train as fit

    settings.update(out=None if out is None else str(out), time_budget=time_budget)
    if corpus is not None:
        settings["corpus"] = corpus if str(corpus) == "-" else str(Path(corpus).absolute())
    cfg = build_run_config(config, settings, resume=resume, init_from=init_from)
    if text is not None:
        if corpus is not None:
            raise UsageError("give either a corpus file or text=, not both")
        name = "corpus"
    else:
        if resume and corpus is None:
            from charrnn.training.run_folder import saved_corpus

            cfg.data.corpus = saved_corpus(cfg.train.out)
        text, name = read_corpus(cfg.data.corpus)
    summary = fit(cfg, text, name, resume=resume, overwrite=overwrite,
                  init_from=None if init_from is None else str(init_from), reporter=reporter, started=started)
    known = {f.name for f in fields(TrainResult)}
    return TrainResult(**{k: v for k, v in summary.items() if k in known},
                       extra={k: v for k, v in summary.items() if k not in known})
