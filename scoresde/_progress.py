"""Progress bars that suit where they write: tqdm on a terminal, a few plain lines in a file or a pipe.

tqdm redraws its bar with carriage returns; into a log file (``scoresde train > log 2>&1``, a batch job) that is
one line of tens of kilobytes. `progress_bar` returns tqdm when its stream is a terminal and a `LineProgress`
otherwise, which writes one ``desc: n/total (pct%) elapsed, rate`` line about every tenth of the work (and at most
every ``min_interval`` seconds), and a last line when it closes.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):          # no isatty, or a closed stream
        return False


class LineProgress:
    """The part of tqdm's interface the package uses (``update``, ``set_postfix``, ``close``, iteration), written
    as whole lines: at each tenth of ``total`` (or every ``min_interval`` seconds without a total) and at the
    end."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", initial: int = 0, file: Optional[TextIO] = None, min_interval: float = 10.0,
                 **_: Any):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = int(initial)
        self.file = file if file is not None else sys.stderr
        self.min_interval = float(min_interval)
        self.postfix = ""
        self.start = self.last_time = time.perf_counter()
        self.next_fraction = 0.1
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = str(text)

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.perf_counter()
        if self.total:
            due = self.n / self.total >= self.next_fraction and now - self.last_time >= min(self.min_interval, 1.0)
            due = due or now - self.last_time >= max(self.min_interval, 60.0)
        else:
            due = now - self.last_time >= self.min_interval
        if due and (not self.total or self.n < self.total):
            self._write(now)

    def _write(self, now: float) -> None:
        elapsed = now - self.start
        done = self.n - self.start_n
        count = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        rate = f", {done / elapsed:.3g} {self.unit}/s" if elapsed > 0 and done > 0 else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc or 'progress'}: {count} {self.unit}, {elapsed:.0f} s{rate}{tail}", file=self.file,
              flush=True)
        self.last_time = now
        if self.total:
            while self.next_fraction <= self.n / self.total:
                self.next_fraction += 0.1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n > self.start_n:
                self._write(time.perf_counter())

    def write(self, text: str) -> None:
        print(text, file=self.file, flush=True)


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str = "",
                 file: Optional[TextIO] = None, min_interval: float = 10.0, **kwargs: Any):
    """tqdm (``tqdm.auto``) when ``file`` (default: stderr, tqdm's) is a terminal, else a `LineProgress`: both
    take ``iterable``, ``total``, ``desc``, ``unit``, ``initial`` and tqdm's other keyword arguments (which
    `LineProgress` ignores)."""
    stream = file if file is not None else sys.stderr
    if _is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, file=file, **kwargs)
    return LineProgress(iterable, total=total, desc=desc, file=stream, min_interval=min_interval, **kwargs)
