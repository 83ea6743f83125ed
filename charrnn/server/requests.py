"""What a request may ask: the limits, and each endpoint's fields checked one by one.

No web framework here: a parsed JSON body in, a plain request object out, or a ``FieldError``
that names the field and says what it must be (the app turns it into a 4xx JSON answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

UNKNOWN = ("error", "skip", "unk")


@dataclass(frozen=True)
class Limits:
    """The most a request may ask for; each is a ``charrnn serve`` flag."""

    max_length: int = 2000
    """Tokens per sample (--max-length)."""
    max_samples: int = 8
    """Samples per request, ``n`` (--max-samples)."""
    max_prompt: int = 2000
    """Characters of a prompt (--max-prompt). A prompt is fed in one go, about 0.2 ms a
    character for a 2x512 LSTM here, while other requests wait."""
    max_body: int = 256 * 1024
    """Bytes of a request body (--max-body); it also bounds the text that /v1/score takes."""
    max_jobs: int = 64
    """Generations in progress at once (--max-jobs); one more is answered 503."""
    max_k: int = 50
    """Candidates that /v1/next lists."""

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class FieldError(Exception):
    """A request the client must change: ``field`` names what is wrong (None: the body itself)."""

    def __init__(self, field: str | None, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


@dataclass
class SampleRequest:
    model: str | None
    prompt: str
    length: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None
    stop: str | None
    n: int
    stream: bool
    unknown: str
    label: str | None
    novel: bool


@dataclass
class ScoreRequest:
    model: str | None
    text: str
    per_line: bool
    unknown: str


@dataclass
class NextRequest:
    model: str | None
    prompt: str
    k: int
    temperature: float
    unknown: str
    label: str | None


class _Fields:
    """Reads the fields of one body; every read checks type and range and names the field."""

    def __init__(self, body: Any, allowed: tuple[str, ...]):
        if not isinstance(body, dict):
            raise FieldError(None, "the body must be a JSON object", 400)
        extra = sorted(set(body) - set(allowed))
        if extra:
            raise FieldError(extra[0], f"unknown field {extra[0]!r}; the fields are: {', '.join(allowed)}")
        self.body = body

    def str(self, name: str, default: str | None, max_chars: int | None = None, empty: bool = True) -> str | None:
        v = self.body.get(name, default)
        if v is None and default is None:
            return None
        if not isinstance(v, str):
            raise FieldError(name, f"{name} must be a string")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate, sent as a JSON escape: no character
            raise FieldError(
                name,
                f"{name} holds {v[e.start]!r} at character {e.start}, half of a surrogate pair and "
                "no character; send text",
            ) from None
        if not empty and not v:
            raise FieldError(name, f"{name} must not be empty")
        if max_chars is not None and len(v) > max_chars:
            raise FieldError(name, f"{name} is {len(v)} characters; the limit is {max_chars}")
        return v

    def int(self, name: str, default: int | None, lo: int, hi: int, limit: str | None = None) -> int | None:
        v = self.body.get(name, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise FieldError(name, f"{name} must be an integer")
        if v < lo:
            raise FieldError(name, f"{name} must be >= {lo}, not {v}")
        if v > hi:
            why = f"; the server's limit ({limit})" if limit else ""
            raise FieldError(name, f"{name} must be <= {hi}{why}, not {v}")
        return v

    def float(self, name: str, default: float | None, lo: float, hi: float, lo_open: bool = False) -> float | None:
        v = self.body.get(name, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise FieldError(name, f"{name} must be a finite number")
        if v < lo or (lo_open and v == lo) or v > hi:
            low = "(" if lo_open else "["
            raise FieldError(name, f"{name} must be in {low}{lo:g}, {hi:g}], not {v}")
        return float(v)

    def bool(self, name: str, default: bool) -> bool:
        v = self.body.get(name, default)
        if not isinstance(v, bool):
            raise FieldError(name, f"{name} must be true or false")
        return v

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        v = self.body.get(name, default)
        if v not in options:
            raise FieldError(name, f"{name} must be one of {', '.join(options)}, not {v!r}")
        return v


SAMPLE_FIELDS = (
    "model",
    "prompt",
    "length",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "stop",
    "n",
    "stream",
    "unknown",
    "label",
    "novel",
)
SCORE_FIELDS = ("model", "text", "per_line", "unknown")
NEXT_FIELDS = ("model", "prompt", "k", "temperature", "unknown", "label")


def parse_sample(body: Any, limits: Limits) -> SampleRequest:
    """POST /v1/sample. Defaults are the CLI's: 500 tokens (capped at the limit), temperature 0.8,
    one sample, a random seed. ``label`` (labelled records models) and ``novel`` (drop samples
    that copy the training data, and draw more) are the CLI's --label and --novel."""
    f = _Fields(body, SAMPLE_FIELDS)
    return SampleRequest(
        model=f.str("model", None),
        prompt=f.str("prompt", "", limits.max_prompt),
        length=f.int("length", min(500, limits.max_length), 0, limits.max_length, "--max-length"),
        temperature=f.float("temperature", 0.8, 0.0, 100.0),
        top_k=f.int("top_k", None, 1, 2**31 - 1),
        top_p=f.float("top_p", None, 0.0, 1.0, lo_open=True),
        seed=f.int("seed", None, 0, 2**63 - 1),
        stop=f.str("stop", None, 1000, empty=False),
        n=f.int("n", 1, 1, limits.max_samples, "--max-samples"),
        stream=f.bool("stream", False),
        unknown=f.choice("unknown", "error", UNKNOWN),
        label=f.str("label", None, 1000, empty=False),
        novel=f.bool("novel", False),
    )


def parse_score(body: Any, limits: Limits) -> ScoreRequest:
    """POST /v1/score: ``text`` (its size is bounded by --max-body), ``per_line``, ``unknown`` (auto: unk for word models, else error)."""
    f = _Fields(body, SCORE_FIELDS)
    text = f.str("text", None, empty=False)
    if text is None:
        raise FieldError("text", "text is required: the text to score")
    return ScoreRequest(
        model=f.str("model", None),
        text=text,
        per_line=f.bool("per_line", False),
        unknown=f.choice("unknown", "auto", UNKNOWN + ("auto",)),
    )


def parse_next(body: Any, limits: Limits) -> NextRequest:
    """POST /v1/next: the ``k`` likeliest tokens after ``prompt`` at ``temperature`` (default 1)."""
    f = _Fields(body, NEXT_FIELDS)
    return NextRequest(
        model=f.str("model", None),
        prompt=f.str("prompt", "", limits.max_prompt),
        k=f.int("k", 5, 1, limits.max_k),
        temperature=f.float("temperature", 1.0, 0.0, 100.0),
        unknown=f.choice("unknown", "error", UNKNOWN),
        label=f.str("label", None, 1000, empty=False),
    )
