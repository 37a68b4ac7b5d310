"""Reading a big JSON document without holding it: top-level fields whole, chosen arrays
in chunks.

An attribution graph is one JSON object whose ``links`` array can hold tens of millions
of small objects (a 2 GB file). :func:`read_document` walks the top-level object; every
field is parsed whole (``json``) except the arrays named in ``arrays``, which are handed
to their callback chunk by chunk: a window of ~8 MB is cut after a ``}`` that ends an
element, and the run of elements is parsed at once.

Why this shape (measured on 1M links, 2 busy cores; docs/engines.md, "Big JSON"): ``ijson``
with yajl2_c yields 0.7-1.0M links/s as Python dicts; ``json.loads`` of the whole file
needs ~5x its size in memory; parsing 8 MB runs of links with pyarrow's JSON reader
(the run wrapped as ``{"\\u0001run": [run]}``, against an explicit schema) reached
1.8-3M links/s per core straight into Arrow columns, at a few tens of MB. A cut is
proven right by the parse itself: a run that ends inside a string or a nested object is
not valid JSON (the wrapper's odd key means no sibling field can close it), so the parse
fails and an earlier ``}`` is tried; after a few misses the window is decoded element
by element (slow, exact). Parsers therefore return ``None`` for "not valid JSON" and raise
:class:`~headgraph.errors.BadInputError` for valid JSON with wrong content.

With ``workers``, runs are parsed in threads (pyarrow releases the GIL) while the next cut
is found: each cut is then a guess (a ``}`` followed by ``,`` or ``]``), and when a run
turns out not to parse, the runs after it are dropped, the file is read again from that
run's first byte, and the rest of the array goes one proven cut at a time.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Protocol

from headgraph.errors import BadInputError

CHUNK = 8 << 20
FAST_TRIES = 3  # candidate cuts tried before decoding element by element
WS = b" \t\r\n"
_DECODER = json.JSONDecoder()

IN_FLIGHT = 3  # runs parsed ahead when pipelined


class RunParser(Protocol):
    """Parses runs of array elements (the bytes between ``[``/``,`` and ``,``/``]``)."""

    def prepare(self, run: bytes) -> Any | None:
        """Parse ``run`` (any thread); None when it is not valid JSON (a wrong cut)."""

    def apply(self, parsed: Any) -> None:
        """Take a parsed run (the reading thread, in file order)."""


class _Rewind(Exception):
    """A guessed cut was wrong: read again from ``offset``."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


class JsonStream:
    """A forward-only window over a binary file, with the absolute offset of each byte.

    ``on_read(offset)`` is called as the window advances (for a progress bar).
    """

    def __init__(self, f: BinaryIO, *, chunk: int = CHUNK,
                 on_read: Callable[[int], None] | None = None) -> None:
        self._f = f
        self._buf = b""
        self._pos = 0
        self._base = 0
        self._eof = False
        self.chunk = chunk
        self._on_read = on_read

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def _fill(self, need: int) -> bool:
        """At least ``need`` unread bytes in the window, unless the file ends first."""
        while len(self._buf) - self._pos < need and not self._eof:
            more = self._f.read(max(need, self.chunk))
            if not more:
                self._eof = True
                break
            self._buf = self._buf[self._pos:] + more
            self._base += self._pos
            self._pos = 0
            if self._on_read is not None:
                self._on_read(self._base + len(self._buf))
        return len(self._buf) - self._pos >= need

    def fail(self, what: str) -> BadInputError:
        return BadInputError(f"not valid JSON at byte {self.offset:,}: {what}.")

    def skip_ws(self) -> None:
        while True:
            if not self._fill(1):
                return
            buf, i = self._buf, self._pos
            while i < len(buf) and buf[i] in WS:
                i += 1
            self._pos = i
            if i < len(buf):
                return

    def peek(self) -> bytes:
        """The next byte (``b""`` at the end of the file)."""
        if not self._fill(1):
            return b""
        return self._buf[self._pos:self._pos + 1]

    def take(self, expected: bytes) -> None:
        if self.peek() != expected:
            got = self.peek().decode("latin-1") or "the end of the file"
            raise self.fail(f"expected {expected.decode()!r}, found {got!r}")
        self._pos += 1

    def at_end(self) -> bool:
        self.skip_ws()
        return self.peek() == b""

    def value(self) -> Any:
        """One complete JSON value (a field of the top-level object), parsed whole."""
        size = 1 << 16
        while True:
            rest = not self._fill(size)  # the window holds the rest of the file
            raw = self._buf[self._pos:self._pos + size]
            text = self._decode(raw, rest)
            try:
                value, end = _DECODER.raw_decode(text)
            except json.JSONDecodeError as exc:
                if rest:
                    raise self.fail(exc.msg) from None
                size *= 4
                continue
            if end == len(text) and not rest:  # a number may go on past the window
                size *= 4
                continue
            self._pos += len(text[:end].encode("utf-8"))
            return value

    def _decode(self, raw: bytes, rest: bool) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not rest and exc.start >= len(raw) - 3:  # a character cut by the window
                return raw[:exc.start].decode("utf-8")
            raise self.fail("the text is not UTF-8") from None

    def array(self, parser: RunParser, pool: ThreadPoolExecutor | None = None) -> None:
        """Consume an array of objects, handing runs of whole elements to ``parser``
        (parsed in ``pool`` while the next cut is found, when given)."""
        self.take(b"[")
        self.skip_ws()
        if self.peek() == b"]":
            self._pos += 1
            return
        if pool is not None:
            try:
                self._guessed_runs(parser, pool)
                return
            except _Rewind as rewind:
                self._f.seek(rewind.offset)
                self._buf, self._pos, self._base, self._eof = b"", 0, rewind.offset, False
        self._proven_runs(parser)

    def _proven_runs(self, parser: RunParser) -> None:
        def parse(run: bytes) -> bool:
            parsed = parser.prepare(run)
            if parsed is None:
                return False
            parser.apply(parsed)
            return True

        window = self.chunk
        while True:
            rest = not self._fill(window)
            buf, start = self._buf, self._pos
            after = self._cut(buf, start, parse) or self._exact_cut(buf, start, rest, parse)
            if after is None:  # no element ends in the window: one bigger than it
                if rest:
                    raise self.fail("an array element does not end, or is not an object")
                window *= 2
                continue
            self._pos = after + 1
            if buf[after] == 93:  # "]"
                return
            window = self.chunk
            self.skip_ws()

    def _guessed_runs(self, parser: RunParser, pool: ThreadPoolExecutor) -> None:
        pending: deque[tuple[int, Future]] = deque()
        try:
            while True:
                self._fill(self.chunk)
                buf, start = self._buf, self._pos
                cut = _guess(buf, start)
                if cut is None:  # no likely cut in the window: go one proven run at a time
                    self._settle(pending, parser, 0)
                    raise _Rewind(self._base + start)
                after = _next_token(buf, cut + 1)
                assert after is not None
                pending.append((self._base + start, pool.submit(parser.prepare,
                                                                buf[start:cut + 1])))
                self._pos = after + 1
                end = buf[after] == 93  # "]"
                self._settle(pending, parser, 0 if end else IN_FLIGHT)
                if end:
                    return
                self.skip_ws()
        finally:
            for _, future in pending:
                future.cancel()

    @staticmethod
    def _settle(pending: deque[tuple[int, Future]], parser: RunParser, keep: int) -> None:
        while len(pending) > keep:
            offset, future = pending.popleft()
            parsed = future.result()
            if parsed is None:
                raise _Rewind(offset)
            parser.apply(parsed)

    def _cut(self, buf: bytes, start: int, parse: Callable[[bytes], bool]) -> int | None:
        """Try a few ``}`` of the window as the end of a run: the one before the first
        ``]`` (the array's end when its elements hold no arrays), then the last ones. The
        index of the ``,`` or ``]`` after the run that parsed, or None."""
        last = buf.rfind(b"}", start)
        close = buf.find(b"]", start)
        first = buf.rfind(b"}", start, close) if close >= 0 else -1
        tried = 0
        for cut in (first, last):
            while cut >= 0 and tried < FAST_TRIES:
                tried += 1
                after = _next_token(buf, cut + 1)
                if after is not None and buf[after] in b",]" and parse(buf[start:cut + 1]):
                    return after
                if cut == first:
                    break
                cut = buf.rfind(b"}", start, cut)
        return None

    def _exact_cut(self, buf: bytes, start: int, rest: bool,
                   parse: Callable[[bytes], bool]) -> int | None:
        """Find the last whole element by decoding element after element (slow, exact):
        for ``}`` inside strings or nested objects near every cut."""
        text = self._decode(buf[start:], rest)
        i, last = 0, None
        while True:
            try:
                _, end = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError:
                break
            j = end
            while j < len(text) and text[j] in " \t\r\n":
                j += 1
            if j >= len(text) or text[j] not in ",]":
                break
            last = (end, j)
            if text[j] == "]":
                break
            i = j + 1
            while i < len(text) and text[i] in " \t\r\n":
                i += 1
        if last is None:
            return None
        end = start + len(text[:last[0]].encode("utf-8"))
        after = start + len(text[:last[1]].encode("utf-8"))
        if not parse(buf[start:end]):
            raise self.fail("an array element is not valid JSON")
        return after


def _guess(buf: bytes, start: int) -> int | None:
    """A ``}`` likely to end a run: the last of the window followed by ``,``, or the one
    before the first ``]`` followed by ``]`` (the end of the array)."""
    close = buf.find(b"]", start)
    if close >= 0:
        cut = buf.rfind(b"}", start, close)
        after = _next_token(buf, cut + 1) if cut >= 0 else None
        if after is not None and buf[after] == 93:
            return cut
    cut = buf.rfind(b"}", start)
    while cut >= 0:
        after = _next_token(buf, cut + 1)
        if after is not None and buf[after] == 44:  # ","
            return cut
        cut = buf.rfind(b"}", start, cut)
    return None


def _next_token(buf: bytes, i: int) -> int | None:
    """Index of the first non-blank byte at or after ``i``; None if the window ends."""
    n = len(buf)
    while i < n and buf[i] in WS:
        i += 1
    return i if i < n else None


def read_document(f: BinaryIO, arrays: dict[str, RunParser], *, chunk: int = CHUNK,
                  workers: int = 0, on_read: Callable[[int], None] | None = None
                  ) -> tuple[dict[str, Any], list[str]]:
    """Walk the top-level object of ``f`` (a seekable binary file): fields named in
    ``arrays`` whose value is an array go to their parser in runs of elements (parsed by
    ``workers`` threads when > 0); every other field is parsed whole. Returns those fields
    (in file order) and the names of the streamed arrays."""
    s = JsonStream(f, chunk=chunk, on_read=on_read)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="json-runs") if workers else None
    try:
        return _walk(s, arrays, pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _walk(s: JsonStream, arrays: dict[str, RunParser], pool: ThreadPoolExecutor | None
          ) -> tuple[dict[str, Any], list[str]]:
    s.skip_ws()
    s.take(b"{")
    out: dict[str, Any] = {}
    streamed: list[str] = []
    s.skip_ws()
    if s.peek() == b"}":
        s.take(b"}")
    else:
        while True:
            s.skip_ws()
            if s.peek() != b'"':
                raise s.fail("expected a field name")
            key = s.value()
            s.skip_ws()
            s.take(b":")
            s.skip_ws()
            if key in out or key in streamed:
                raise s.fail(f"the field {key!r} appears twice")
            if key in arrays and s.peek() == b"[":
                s.array(arrays[key], pool)
                streamed.append(key)
            else:
                out[key] = s.value()
            s.skip_ws()
            if s.peek() == b",":
                s.take(b",")
                continue
            s.take(b"}")
            break
    if not s.at_end():
        raise s.fail("data after the top-level object")
    return out, streamed
