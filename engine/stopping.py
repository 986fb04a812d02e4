"""Stop strings for streamed generation: text is released only once it cannot be the start of a stop string, so a
stop string never reaches the screen, even when it arrives split over several tokens."""

from __future__ import annotations


class StopStrings:
    def __init__(self, stops: tuple[str, ...] | list[str] = ()) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.hit = ""  # the stop string found, "" while none

    def push(self, text: str) -> str:
        """Add generated text; return what can be shown now. After a hit, returns the text before it and
        ignores everything later."""
        if self.hit or not self.stops:
            return "" if self.hit else text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = next(s for s in self.stops if buf.find(s) == cut)
            self._held = ""
            return buf[:cut]
        keep = 0  # the longest suffix of buf that starts some stop string
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """At the end of generation without a hit: the held text is answer text after all."""
        out, self._held = ("" if self.hit else self._held), ""
        return out
