"""Token chunks to text: decoding, stop strings, and text that is final as it streams."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class StopCut:
    """One sample's text, cut where ``stop`` first appears. Text is final once it cannot be the
    start of a stop string still being written; ``ready()`` returns what became final since its
    last call, so a stream never shows part of a stop string."""

    def __init__(self, stop: str | None):
        self.stop, self.parts, self.pending, self.shown, self.done = stop, [], "", 0, False

    def add(self, piece: str) -> None:
        if not self.stop:
            self.parts.append(piece)
            return
        self.pending += piece  # never longer than len(stop) - 1 + len(piece)
        at = self.pending.find(self.stop)
        if at >= 0:
            self.parts.append(self.pending[:at])
            self.pending, self.done = "", True
        elif len(self.pending) >= len(self.stop):
            cut = len(self.pending) - len(self.stop) + 1
            self.parts.append(self.pending[:cut])
            self.pending = self.pending[cut:]

    def finish(self) -> None:
        self.parts.append(self.pending)
        self.pending, self.done = "", True

    def ready(self) -> str:
        out = "".join(self.parts[self.shown :])
        self.shown = len(self.parts)
        return out

    @property
    def text(self) -> str:
        return "".join(self.parts)


def decode_streams(
    chunks: Iterable[list[list[int]]], vocab: list[str], streams: int, stop: str | None, end_id: int | None = None
) -> Iterator[list[str]]:
    """Per chunk, each stream's text that became final (a list of ``streams`` strings, some empty);
    a stream ends at its stop string or at the token ``end_id`` (a record's end, not shown), and
    the loop as soon as every stream has ended."""
    cuts = [StopCut(stop) for _ in range(streams)]
    for chunk in chunks:
        for cut, ids in zip(cuts, chunk):
            if not cut.done:
                ended = end_id is not None and end_id in ids
                if ended:
                    ids = ids[: ids.index(end_id)]
                cut.add("".join([vocab[i] for i in ids]))
                if ended and not cut.done:
                    cut.finish()
        yield [cut.ready() for cut in cuts]
        if all(cut.done for cut in cuts):
            break
    for cut in cuts:
        cut.finish()
    yield [cut.ready() for cut in cuts]
