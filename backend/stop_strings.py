"""Stop strings as OpenAI applies them: generation ends at the first one, which is not returned.

Text arrives one token at a time. A token whose text could be the start of a stop string is held
back until later tokens show whether the stop string follows, so no text of a stop string ever
reaches the client, streamed or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Piece:
    """The text of one token released to the client (cut short when a stop string starts in it)."""

    text: str
    payload: Any = None  # what travels with the token (its log-probabilities)


class StopMatcher:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.stopped = False  # a stop string matched: nothing more is released
        self._pending: list[Piece] = []

    def push(self, text: str, payload: Any = None) -> list[Piece]:
        """Add one token's text; return the pieces that can go to the client now."""
        if self.stopped:
            return []
        if not self.stops:
            return [Piece(text, payload)]
        self._pending.append(Piece(text, payload))
        joined = "".join(p.text for p in self._pending)
        found = [i for i in (joined.find(s) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            return self._release(min(found), partial=True)
        return self._release(len(joined) - self._held(joined), partial=False)

    def flush(self) -> list[Piece]:
        """Generation ended without a stop string: everything held back goes out."""
        pieces, self._pending = self._pending, []
        return [] if self.stopped else pieces

    def _held(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best

    def _release(self, end: int, partial: bool) -> list[Piece]:
        """The pieces of the first `end` characters; with `partial`, the token the cut falls in
        gives its first part and everything after is dropped."""
        out, pos = [], 0
        while self._pending:
            piece = self._pending[0]
            if pos + len(piece.text) <= end:
                out.append(self._pending.pop(0))
                pos += len(piece.text)
                continue
            if partial and pos < end:
                out.append(Piece(piece.text[: end - pos], piece.payload))
            break
        if partial:
            self._pending = []
        return out
