"""The `charrnn` command: parse, build configs, call the library, map errors to exit codes.

The only module that imports typer. torch is imported inside the commands, so that
`charrnn --help` answers at once.
"""

from __future__ import annotations

import time


def _process_start() -> float:
    """time.monotonic() at which this process started (Linux), so a time budget covers the
    interpreter's start-up and imports too; elsewhere, the moment this module loads."""
    now = time.monotonic()
    try:
        import os

        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return now - age if 0 <= age < 60 else now
    except (OSError, ValueError, IndexError):
        return now


T0 = _process_start()

import errno  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from enum import Enum  # noqa: E402

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

try:  # Typer 0.2x carries its own copy of click
    from typer._click import exceptions as click_errors  # noqa: E402
except ImportError:  # older Typer uses click itself
    from click import exceptions as click_errors  # noqa: E402

from charrnn import __version__  # noqa: E402
from charrnn.errors import CharrnnError, UsageError  # noqa: E402


class _Group(TyperGroup):
    """Parse errors as one line on stderr, like every other user mistake (Typer draws a box)."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        _utf8_streams()
        try:
            try:
                rv = super().main(*args, standalone_mode=False, **kwargs)
            except getattr(click_errors, "NoArgsIsHelpError", ()) as e:
                print(e.format_message())
                rv = 0
            sys.stdout.flush()
        except click_errors.ClickException as e:
            where = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) else ""
            print(f"charrnn: error: {' '.join(e.format_message().split())}{where}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.exit(130)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(0)
        except OSError as e:  # stdout on a full device, or closed: one line, a runtime failure
            _silence_stdout()
            fix = (
                "free some space or write it somewhere else"
                if e.errno == errno.ENOSPC
                else "send it somewhere (> file)"
            )
            print(f"charrnn: error: cannot write the output: {e.strerror or e}; {fix}", file=sys.stderr, flush=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class _ClosedStdout(io.RawIOBase):
    """What stdout is when the shell closed it (`>&-`): the first write fails as the closed fd
    would (and is reported); what follows is dropped, so the exit stays quiet."""

    failed = False

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EBADF, "stdout is closed")
        return len(b)


def _utf8_streams() -> None:
    """stdout carries UTF-8 whatever the locale (an ASCII or Latin-1 PYTHONIOENCODING, a C
    locale): text and JSON come out whole, never a UnicodeEncodeError. stderr keeps the
    terminal's encoding for people, with anything it cannot show escaped. A closed stdout
    fails on the first write, as a full one does."""
    if sys.stdout is None:
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(_ClosedStdout()), encoding="utf-8")
    for stream, kw in (
        (sys.stdout, {"encoding": "utf-8", "errors": "surrogateescape"}),
        (sys.stderr, {"errors": "backslashreplace"}),
    ):
        try:
            stream.reconfigure(**kw)
        except (AttributeError, ValueError, OSError):  # not a text file, or already written to
            pass


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Learn the style of any text and write more of it.\n\n"
    "Example: charrnn train corpus.txt --time-budget 5m && charrnn sample --prompt 'ROMEO:'",
)


def _version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


class Unknown(str, Enum):
    error = "error"
    skip = "skip"
    unk = "unk"
    auto = "auto"


def _fail(e: CharrnnError) -> None:
    print(f"charrnn: error: {e}", file=sys.stderr, flush=True)
    raise typer.Exit(e.exit_code)


def _unescape(s: str | None) -> str | None:
    """`--stop '\\n\\n'` means two newlines, as a user typing it in a shell expects."""
    if s is None:
        return None
    return s.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def _read_arg(text: str) -> str:
    """`-` reads the value from stdin, bytes as they are (CRLF stays CRLF)."""
    if text != "-":
        return text
    from charrnn.files import read_text

    return read_text("-", "the prompt")


def _silence_stdout() -> None:
    """The reader went away (`| head`): send what is still buffered nowhere, so exit is quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _quiet_pipe() -> None:
    _silence_stdout()
    raise typer.Exit(0)


def _emit(text: str) -> None:
    """A line of data on stdout; a closed pipe ends the command quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _quiet_pipe()


def _setting_options() -> list[inspect.Parameter]:
    """One option per setting of the run configuration (config.py), named after the field
    (``--seq-len``), its help the field's docstring: the dataclasses are the one source."""
    from dataclasses import fields

    from charrnn.config import RunConfig, field_help

    kinds = {"int": int, "float": float}
    params = []
    for section in fields(RunConfig):
        cls = section.default_factory
        docs = field_help(cls)
        for f in fields(cls):
            meta = f.metadata
            if meta.get("cli") is False:
                continue
            shown = meta.get("default", None if f.default is None else str(f.default))
            types = str(f.type).split(" | ")
            kind = str if "str" in types else next((k for n, k in kinds.items() if n in types), str)
            # The choices are listed in the help and checked by config.py, whose message names them all.
            metavar = "|".join(meta["choices"]) if "choices" in meta else None
            names = meta.get("flags", (f"--{f.name.replace('_', '-')}",))
            params.append(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=kind | None,
                    default=typer.Option(
                        None, *names, help=docs.get(f.name, ""), metavar=metavar, show_default=shown or False
                    ),
                )
            )
    return params


def train(
    corpus: list[str] | None = typer.Argument(
        None,
        help="UTF-8 text files and folders (read recursively, a newline between files), or - for stdin. Default: the Python standard library's own source.",
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        help="YAML file with any of the settings below (config.yaml of a run has them all); flags win.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an --out folder that holds a run."),
    init_from: str | None = typer.Option(None, "--init-from", help="Fine-tune this checkpoint on the corpus."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout at the end."),
    **settings,
) -> None:
    """Train a model on a text.

    Example: charrnn train corpus.txt --time-budget 5m
    """
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 talks
    try:
        from charrnn.api import train as run_training
        from charrnn.console import RichReporter

        reporter = RichReporter(quiet=quiet or not main_rank)
        result = run_training(
            (corpus[0] if len(corpus) == 1 else corpus) if corpus else None,
            config=config,
            resume=resume,
            overwrite=overwrite,
            init_from=init_from,
            reporter=reporter,
            started=T0,
            **settings,
        )
        summary = result.to_dict()
    except CharrnnError as e:
        _fail(e)
    except OSError as e:  # a run folder the disk refuses (metrics, config): checkpoints say so themselves
        where = f" {e.filename}" if e.filename else ""
        fix = "free some space" if e.errno == errno.ENOSPC else "give --out a folder you can write"
        _fail(
            CharrnnError(
                f"cannot write{where}: {e.strerror or e}; {fix}, then run it again "
                "(--resume continues from last.pt where the run saved one)"
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if not main_rank:
        return
    if not quiet:
        print(_summary_line(summary), file=sys.stderr)
    if as_json:
        _emit(_json(summary))
    if summary["interrupted"]:
        raise typer.Exit(130)


train.__signature__ = inspect.signature(train).replace(  # type: ignore[attr-defined]
    parameters=[p for p in inspect.signature(train).parameters.values() if p.kind != p.VAR_KEYWORD] + _setting_options()
)
app.command()(train)


def _summary_line(summary: dict) -> str:
    """The line a run ends with on stderr."""
    best = summary["best_val_loss"]
    first = summary.get("resumed_from_step") or 0
    steps = f"steps {first} to {summary['steps']}" if first else f"{summary['steps']} steps"
    ended = "interrupted; " if summary["interrupted"] else "stopped early; " if summary.get("stopped_early") else ""
    return (
        f"{ended}{steps} in {summary['seconds']:.1f}s, {summary['tokens_per_second']:,.0f} tok/s; best val loss "
        f"{'n/a' if best is None else f'{best:.4f}'}; saved {summary['checkpoint']}"
    )


@app.command()
def sample(
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", "-c", help="A .pt file or run folder.  [default: newest best.pt under checkpoints/]"
    ),
    step: int | None = typer.Option(
        None,
        "--step",
        help="The run folder's checkpoint of this step (kept with train --keep; `charrnn info RUN` lists them).",
    ),
    prompt: str = typer.Option(
        "",
        "--prompt",
        "-p",
        help="Text to start from (a records model: the record's beginning); - reads it from stdin.",
    ),
    length: int = typer.Option(
        500, "--length", "-n", help="Tokens to generate per sample (a records model: the most per record)."
    ),
    temp: str = typer.Option(
        "0.8",
        "--temp",
        "-t",
        help="Temperature; 0 is greedy. Several, comma-separated (0.5,0.8,1.1): N samples at each, tagged in --json.",
    ),
    greedy: bool = typer.Option(False, "--greedy", help="Always the most likely token (same as --temp 0)."),
    top_k: int | None = typer.Option(None, "--top-k", help="Sample only among the K most likely tokens."),
    top_p: float | None = typer.Option(None, "--top-p", help="Sample only within the nucleus of mass P."),
    num_samples: int = typer.Option(1, "--num-samples", "-N", help="Samples, generated side by side."),
    seed: int | None = typer.Option(None, "--seed", "-s", help="Same seed, same text."),
    stop: str | None = typer.Option(None, "--stop", help="End a sample where this string appears (\\n allowed)."),
    echo: bool = typer.Option(True, "--echo/--no-echo", help="Write the prompt before the sample."),
    separator: str | None = typer.Option(
        None,
        "--separator",
        help="Written between samples (\\n allowed).  [default: a blank line, a line of 20 '=' where a sample holds blank lines; records: none, one per line]",
    ),
    novel: bool = typer.Option(
        False,
        "--novel",
        help="Drop samples that copy the training data (records: whole records; text: 24-character windows) and draw more.",
    ),
    unique: bool = typer.Option(False, "--unique", help="Drop repeated samples and draw more."),
    max_attempts: int | None = typer.Option(
        None,
        "--max-attempts",
        help="With --novel/--unique: draw at most this many per temperature.  [default: 10 N + 100]",
    ),
    label: str | None = typer.Option(None, "--label", help="A labelled records model: generate records of this label."),
    unknown: Unknown = typer.Option(
        Unknown.error, "--unknown", help="Prompt tokens the model never saw: error, skip, or unk (word models)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per sample: text, seed, index, temperature, nats_per_char."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Step weights: fp32, bf16, or auto (bf16 where one sample and many round alike: LSTMs on CPUs with AVX512-BF16; else fp32).",
    ),
) -> None:
    """Write new text in the style of the training corpus to stdout.

    Example: charrnn sample --prompt 'ROMEO:' --temp 0.7 --length 300 --seed 1
    """
    try:
        from charrnn.api import load, resolve_seed
        from charrnn.sampling.curate import check_max_attempts

        temps = [0.0] if greedy else _temperatures(temp)
        check_max_attempts(max_attempts)
        model = load(checkpoint, device, precision, step=step)
        options = dict(
            length=length,
            top_k=top_k,
            top_p=top_p,
            seed=resolve_seed(seed),
            stop=_unescape(stop),
            unknown=unknown.value,
            label=label,
        )
        text = _read_arg(prompt)
        sep = _unescape(separator)
        if novel or unique or as_json or len(temps) > 1 or model.is_records:
            _write_drawn(
                model, sys.stdout, text, num_samples, temps, echo, sep, as_json, novel, unique, max_attempts, options
            )
        else:
            _write_samples(
                model, sys.stdout, prompt=text, echo=echo, separator=sep, temperature=temps[0], n=num_samples, **options
            )
    except CharrnnError as e:
        _fail(e)
    except BrokenPipeError:
        _quiet_pipe()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _temperatures(text: str) -> list[float]:
    try:
        temps = [float(t) for t in text.split(",")]
    except ValueError:
        raise UsageError(f"--temp takes a number or a comma-separated list such as 0.5,0.8,1.1, not {text!r}") from None
    return temps


RULE = "=" * 20 + "\n"
"""Between free-text samples that hold blank lines themselves, where a blank line would not show
where one ends (gpt-2-simple's ``sample_delim``)."""


def _separator(model, separator: str | None, texts: list[str]) -> str:
    """Free text: a blank line between samples, or ``RULE`` where a sample holds a blank line;
    records: none (one per line), unless a record spans lines."""
    if separator is not None:
        return separator
    if model.is_records:
        return "" if not any("\n" in t.rstrip("\n") for t in texts) else "\n"
    return RULE if any("\n\n" in t.strip("\n") for t in texts) else "\n"


def _write_samples(model, out, *, prompt: str, echo: bool, separator: str | None, **options) -> None:
    """Sample 0 streams as it is produced; the others follow, each after the separator."""
    head = prompt if echo else ""
    chunks = model.generate(
        prompt, **options
    )  # bad options or a prompt it cannot encode fail before anything is written
    texts = [""] * options["n"]
    out.write(head)
    last_flush = time.monotonic()
    for pieces in chunks:
        texts = [t + p for t, p in zip(texts, pieces)]
        if pieces[0]:
            out.write(pieces[0])
            now = time.monotonic()
            if now - last_flush > 0.05:
                out.flush()
                last_flush = now
    out.write(_end(head + texts[0]))
    sep = _separator(model, separator, [head + t for t in texts])
    for t in texts[1:]:
        out.write(sep + head + t + _end(head + t))
    out.flush()


def _write_drawn(model, out, prompt, n, temps, echo, separator, as_json, novel, unique, max_attempts, options) -> None:
    """Curated samples (``CharRNN.draw``: copies, repeats and empty records dropped), written when
    all are drawn; where any was dropped, or with --novel/--unique, a line on stderr (and a last
    JSON object, "summary") says how many were drawn and dropped."""
    head = prompt if echo else ""
    seed = options.pop("seed")
    d = model.draw(
        n,
        prompt,
        temperatures=temps,
        novel=novel,
        unique=unique,
        scores=as_json,
        max_attempts=max_attempts,
        seed=seed,
        **options,
    )
    if as_json:
        for s in d.samples:
            out.write(
                _json(
                    {
                        "text": head + s.text,
                        "seed": s.seed,
                        "index": s.index,
                        "temperature": s.temperature,
                        "nats_per_char": s.nats_per_char,
                    }
                )
                + "\n"
            )
    else:
        texts = [head + s.text for s in d.samples]
        sep = _separator(model, separator, texts)
        out.write(sep.join(t + _end(t) for t in texts))
    short = len(d.samples) < n * len(temps)
    if novel or unique or d.drawn > len(d.samples):
        if as_json:
            out.write(_json({"summary": d.summary}) + "\n")
        dropped = (
            ([f"{d.dropped_copies} copies of the training data"] if novel or d.dropped_copies else [])
            + ([f"{d.dropped_repeats} repeats"] if unique or d.dropped_repeats else [])
            + ([f"{d.dropped_empty} empty records"] if d.dropped_empty else [])
        )
        print(
            f"charrnn: kept {len(d.samples)} of {d.drawn} samples drawn: {' and '.join(dropped) or 'none'} dropped"
            + ("; the attempt limit was reached (raise --max-attempts)" if short else ""),
            file=sys.stderr,
        )
    out.flush()


def _end(text: str) -> str:
    return "" if text.endswith("\n") else "\n"


@app.command()
def score(
    file: str = typer.Argument(..., help="Text file, or - for stdin."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", "-c", help="A .pt file or run folder.  [default: newest]"
    ),
    per_line: bool = typer.Option(False, "--per-line", help="Score each line on its own: 'loss<TAB>line' per line."),
    unknown: Unknown = typer.Option(
        Unknown.auto,
        "--unknown",
        help="Tokens the model never saw: error, skip (left out, counted on stderr), unk; auto: unk for word models, else skip.",
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON output (one object per line with --per-line)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto (as training), fp32, bf16 or fp16."),
) -> None:
    """How well the model predicts a text: loss in nats/token, bits per character, perplexity.

    Example: charrnn score val.txt -c checkpoints/shakespeare --json
    """
    try:
        from charrnn.api import load
        from charrnn.evaluate import split_lines
        from charrnn.files import read_text

        model = load(checkpoint, device, precision)
        streamed = not per_line and not model.is_records and (os.path.isfile(file) or os.path.isdir(file))
        if not streamed:
            text = read_text(file, "text to score")
        if per_line:
            results = model.score_lines(split_lines(text), unknown.value)
            for r in results:
                d = r.to_dict()
                loss = "-" if d["loss"] is None else f"{d['loss']:.4f}"
                print(_json(d) if as_json else f"{loss}\t{r.line}")
            left_out = sum((r.left_out for r in results), Counter())
        else:
            # A file or folder is tokenized in chunks into the token cache: any size fits in memory.
            result = model.score_file(file, unknown.value) if streamed else model.score(text, unknown.value)
            r, left_out = result.to_dict(), result.left_out
            if as_json:
                print(_json(r))
            else:
                print(
                    f"loss {_num(r['loss'], 4)} nats/token  {_num(r['bits_per_char'], 4)} bits/char  "
                    f"perplexity {_num(r['perplexity'], 3)}  ({r['tokens']} tokens)"
                )
        if left_out:
            from charrnn.data.tokenizer import describe_left_out

            print(
                f"charrnn: note: left out {describe_left_out(left_out)} the model never saw; "
                "--unknown error refuses such text",
                file=sys.stderr,
            )
        sys.stdout.flush()
    except CharrnnError as e:
        _fail(e)
    except BrokenPipeError:
        _quiet_pipe()


def _num(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _json(obj) -> str:
    """JSON that is JSON: a number that is not finite becomes null (NaN and Infinity are not JSON)."""

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj))


@app.command()
def info(
    checkpoint: str | None = typer.Argument(None, help="A .pt file or run folder.  [default: newest best.pt]"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a checkpoint: settings, vocabulary, parameters, steps, best val loss, and the
    checkpoints of its run folder with step and validation loss (pick one with `sample --step`).

    Example: charrnn info checkpoints/shakespeare --json
    """
    try:
        from charrnn.checkpoint import describe, load

        d = describe(load(checkpoint))
    except CharrnnError as e:
        _fail(e)
    if as_json:
        _emit(_json(d))
        return
    lines = [f"{k}: {v}" for k, v in d.items() if k not in ("config", "checkpoints")]
    lines += [
        f"{section}: " + ", ".join(f"{k}={v}" for k, v in values.items()) for section, values in d["config"].items()
    ]
    if d["checkpoints"]:
        lines.append("checkpoints:")
        for c in d["checkpoints"]:
            val = "-" if c["val_loss"] is None else f"{c['val_loss']:.4f}"
            lines.append(f"  {c['name']:<16} step {c['step']:>8}  val loss {val:>7}  {c['bytes'] / 1e6:7.1f} MB")
    _emit("\n".join(lines))


class XAxis(str, Enum):
    steps = "steps"
    tokens = "tokens"
    time = "time"


@app.command()
def plot(
    runs: list[str] = typer.Argument(..., help="Run folders (each holds metrics.jsonl); several are overlaid."),
    out: str | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Image to write (.png, .svg, .pdf; needs charrnn[plot]). Without it: a text chart on stdout.",
    ),
    x: XAxis = typer.Option(XAxis.steps, "--x", help="Horizontal axis: optimizer steps, tokens seen, or wall time."),
    size: str = typer.Option("800x500", "--size", help="Image size in pixels, WIDTHxHEIGHT."),
) -> None:
    """Loss curves of one or more runs: train and validation loss, bits/char, the best checkpoint.

    Example: charrnn plot checkpoints/a checkpoints/b -o curves.png --x tokens
    """
    try:
        from charrnn.curves import label_runs, load_run, render_text, write_image

        loaded = [load_run(r) for r in runs]
        label_runs(loaded)
        w, _, h = size.lower().partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise UsageError(f"--size must look like 800x500 (pixels), not {size!r}")
        if out is None:
            columns, lines = shutil.get_terminal_size((80, 24))
            _emit(
                render_text(loaded, x.value, width=min(columns, 120), height=max(8, min(lines - len(loaded) - 6, 20)))
            )
            return
        write_image(loaded, out, x.value, int(w), int(h))
    except CharrnnError as e:
        _fail(e)
    print(f"wrote {out}", file=sys.stderr)


@app.command()
def serve(
    checkpoint: list[str] | None = typer.Option(
        None,
        "--checkpoint",
        "-c",
        help="A .pt file or run folder; repeat to serve several (the first is the default).  [default: newest best.pt]",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. Anything but localhost lets every machine that reaches it use the models.",
    ),
    port: int = typer.Option(8000, "--port", help="Port to listen on; 0 picks a free one."),
    max_length: int = typer.Option(2000, "--max-length", help="Most tokens per sample a request may ask for."),
    max_samples: int = typer.Option(8, "--max-samples", help="Most samples (n) per request."),
    max_prompt: int = typer.Option(2000, "--max-prompt", help="Most characters in a prompt."),
    max_body: int = typer.Option(
        256 * 1024, "--max-body", help="Most bytes in a request body (also bounds the text to score)."
    ),
    max_jobs: int = typer.Option(64, "--max-jobs", help="Most generations in progress at once; more are answered 503."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    precision: str = typer.Option("auto", "--precision", help="Step weights: fp32, bf16 or auto."),
) -> None:
    """Serve models over HTTP: a JSON API (/v1/sample, /v1/score, /v1/next, /v1/models) and a page to play with at /.

    Example: charrnn serve -c checkpoints/shakespeare --port 8000
    """
    try:
        for name, value in [
            ("--max-length", max_length),
            ("--max-samples", max_samples),
            ("--max-prompt", max_prompt),
            ("--max-body", max_body),
            ("--max-jobs", max_jobs),
        ]:
            if value < 1:
                raise UsageError(f"{name} must be >= 1, not {value}")
        if not 0 <= port < 65536:
            raise UsageError(f"--port must be in 0..65535, not {port}")
        from charrnn.server import require

        require()
        from charrnn.server.app import serve as run_server
        from charrnn.server.requests import Limits

        limits = Limits(max_length, max_samples, max_prompt, max_body, max_jobs)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"charrnn: warning: listening on {host}: anyone who can reach it can use the models", file=sys.stderr)

        def announce(url: str) -> None:
            print(f"charrnn: serving at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)

        run_server(checkpoint or None, host, port, limits, device=device, precision=precision, announce=announce)
    except CharrnnError as e:
        _fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


class ExportFormat(str, Enum):
    web = "web"
    onnx = "onnx"
    safetensors = "safetensors"


class ExportPrecision(str, Enum):
    fp16 = "fp16"
    fp32 = "fp32"


@app.command()
def export(
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", "-c", help="A .pt file or run folder.  [default: newest best.pt under checkpoints/]"
    ),
    format: ExportFormat = typer.Option(
        ExportFormat.web,
        "--format",
        "-f",
        help="web: a page and charrnn.js that sample in a browser or Node, from disk or any static host; onnx: model.onnx (one step) and tokenizer.json; safetensors: model.safetensors (weights and metadata).",
    ),
    out: str | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder to write (made if missing; files of the same names are replaced).  [default: RUN-FORMAT, e.g. shakespeare-web]",
    ),
    precision: ExportPrecision = typer.Option(
        ExportPrecision.fp16,
        "--precision",
        help="Stored weights: fp16 (half the size) or fp32 (the same text as `charrnn sample --precision fp32` for a seed).",
    ),
    step: int | None = typer.Option(
        None, "--step", help="The run folder's checkpoint of this step (kept with train --keep)."
    ),
) -> None:
    """Write a model as files that sample without charrnn: a web page, ONNX, or safetensors.

    Example: charrnn export -c checkpoints/shakespeare --format web --out shakespeare-web
    """
    try:
        from charrnn.export import default_out
        from charrnn.export import export as write

        folder = out if out is not None else default_out(checkpoint, format.value, step)
        files = write(checkpoint, folder, format.value, precision.value, step=step)
    except CharrnnError as e:
        _fail(e)
    size = sum(f.stat().st_size for f in files)
    print(f"charrnn: wrote {len(files)} files to {folder} ({size / 1e6:.2f} MB)", file=sys.stderr)
    if format == ExportFormat.web:
        print(
            f"charrnn: open {os.path.join(str(folder), 'index.html')} in a browser (no server needed)", file=sys.stderr
        )


def main() -> None:
    import warnings

    # A user cannot act on a library's internal warnings; stderr is for charrnn's own messages.
    warnings.filterwarnings("ignore", module=r"(torch|numpy)(\.|$)")
    app()
