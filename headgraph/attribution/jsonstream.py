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

What is refused (one :class:`~headgraph.errors.BadInputError` line each, before anything is
written): numbers that are not finite (``NaN``, ``Infinity``, ``1e999``: JSON has no such
values, and an answer that held one would not be JSON), values nested deeper than
:data:`MAX_NESTING`, one array element or top-level field longer than :data:`MAX_ELEMENT`
bytes. Blanks are never held: a run of them, between elements or after the last one, is
skipped as it is read, so memory stays bounded whatever the file's layout (a 1 GB run of
spaces between two links costs one window).
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Protocol

from headgraph.errors import BadInputError

CHUNK = 8 << 20
FAST_TRIES = 3  # candidate cuts tried before decoding element by element
WS = b" \t\r\n"
BOM = b"\xef\xbb\xbf"
MAX_NESTING = 64  # real graph files nest 5 deep (metadata.info.source_urls, supernodes)
MAX_ELEMENT = 64 << 20  # one node, link or top-level field; a real one is under 1 MB
_NOT_BLANK = re.compile(rb"[^ \t\r\n]")
_NOT_BLANK_TEXT = re.compile(r"[^ \t\r\n]")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise not_finite(text)
    return value


def _constant(text: str) -> float:
    raise not_finite(text)


def not_finite(text: str) -> BadInputError:
    return BadInputError(f"the file holds the number {text[:40]}, which is not finite: "
                         "headgraph stores finite numbers only (JSON has no NaN or Infinity); "
                         "fix the tool's output or drop those values.")


def too_deep(limit: int = MAX_NESTING) -> BadInputError:
    return BadInputError(f"the file nests values more than {limit} deep; graph files nest "
                         "a few levels. Flatten the deep field or drop it.")


_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_constant)


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses non-finite numbers and nesting deeper than
    :data:`MAX_NESTING` (:class:`BadInputError`); invalid JSON raises ``ValueError``."""
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except RecursionError:
        raise too_deep() from None
    check_nesting(value)
    return value


def check_nesting(value: Any, limit: int = MAX_NESTING) -> None:
    """:class:`BadInputError` if ``value`` nests lists and objects deeper than ``limit``
    (walked with a stack: no recursion)."""
    if not isinstance(value, dict | list):
        return
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise too_deep(limit)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))

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
        start = f.tell()
        if f.read(3) != BOM:  # a UTF-8 byte-order mark (some editors write one) is skipped
            f.seek(start)
        self._f = f
        self._buf = b""
        self._pos = 0
        self._base = f.tell()
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
        """Skip blanks, a window at a time (a long run of them is never held)."""
        while True:
            if not self._fill(1):
                return
            found = _NOT_BLANK.search(self._buf, self._pos)
            if found is not None:
                self._pos = found.start()
                return
            self._pos = len(self._buf)

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
                size = self._grow(size * 4)
                continue
            except RecursionError:
                raise too_deep() from None
            if end == len(text) and not rest:  # a number may go on past the window
                size = self._grow(size * 4)
                continue
            check_nesting(value)
            self._pos += len(text[:end].encode("utf-8"))
            return value

    def _grow(self, size: int) -> int:
        if size > 4 * MAX_ELEMENT:  # a field of MAX_ELEMENT fits a window of 4x its size
            raise self.fail(f"a value is longer than {MAX_ELEMENT >> 20} MB (a real graph's "
                            "fields are far smaller; blanks inside a value count)")
        return size

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

    def _separator(self) -> bool:
        """After a run: skip blanks (as many as there are, a window at a time), then take
        ``,`` (True: more elements follow) or ``]`` (False: the array ends)."""
        self.skip_ws()
        found = self.peek()
        if found == b",":
            self._pos += 1
            self.skip_ws()
            return True
        if found == b"]":
            self._pos += 1
            return False
        got = found.decode("latin-1") or "the end of the file"
        raise self.fail(f"expected ',' or ']' after an array element, found {got!r}")

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
            end = self._cut(buf, start, parse) or self._exact_cut(buf, start, rest, parse)
            if end is None:  # no element ends in the window: one bigger than it
                if rest:
                    raise self.fail("an array element does not end, or is not an object")
                if window >= MAX_ELEMENT:
                    raise self.fail(f"an array element is longer than {MAX_ELEMENT >> 20} MB "
                                    "(a real node or link is under 1 MB; blanks inside an "
                                    "element count)")
                window *= 2
                continue
            self._pos = end
            if not self._separator():
                return
            window = self.chunk

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
                pending.append((self._base + start, pool.submit(parser.prepare,
                                                                buf[start:cut + 1])))
                self._pos = cut + 1
                try:
                    more = self._separator()
                except BadInputError:  # a wrong guess (its run will not parse) or a
                    self._settle(pending, parser, 0)  # broken file (it will): which one?
                    raise
                self._settle(pending, parser, IN_FLIGHT if more else 0)
                if not more:
                    return
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
        ``]`` (the array's end when its elements hold no arrays), then the last ones; each
        must be followed by ``,``, ``]`` or blanks to the window's end. The index after
        the run that parsed, or None."""
        last = buf.rfind(b"}", start)
        close = buf.find(b"]", start)
        first = buf.rfind(b"}", start, close) if close >= 0 else -1
        tried = 0
        for cut in (first, last):
            while cut >= 0 and tried < FAST_TRIES:
                tried += 1
                after = _next_token(buf, cut + 1)
                if (after is None or buf[after] in b",]") and parse(buf[start:cut + 1]):
                    return cut + 1
                if cut == first:
                    break
                cut = buf.rfind(b"}", start, cut)
        return None

    def _exact_cut(self, buf: bytes, start: int, rest: bool,
                   parse: Callable[[bytes], bool]) -> int | None:
        """Find the last whole element by decoding element after element (slow, exact):
        for ``}`` inside strings or nested objects near every cut. The index after the
        run, or None."""
        text = self._decode(buf[start:], rest)
        i, last = 0, None
        while True:
            try:
                _, end = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError:
                break
            except RecursionError:
                raise too_deep() from None
            found = _NOT_BLANK_TEXT.search(text, end) if end < len(text) else None
            if found is None:  # blanks to the window's end: the run ends here
                if end < len(text) or not rest:
                    last = end
                break
            if text[found.start()] not in ",]":
                break
            last = end
            if text[found.start()] == "]":
                break
            i = found.start() + 1
            more = _NOT_BLANK_TEXT.search(text, i)
            if more is None:
                break
            i = more.start()
        if last is None:
            return None
        end = start + len(text[:last].encode("utf-8"))
        if not parse(buf[start:end]):
            raise self.fail("an array element is not valid JSON")
        return end


def _guess(buf: bytes, start: int) -> int | None:
    """A ``}`` likely to end a run: the one before the first ``]`` if only blanks stand
    between them (the end of the array), else the last of the window followed by ``,``
    or by blanks to the window's end."""
    close = buf.find(b"]", start)
    if close >= 0:
        cut = buf.rfind(b"}", start, close)
        if cut >= 0 and _next_token(buf, cut + 1) == close:
            return cut
    cut = buf.rfind(b"}", start)
    while cut >= 0:
        after = _next_token(buf, cut + 1)
        if after is None or buf[after] == 44:  # ","
            return cut
        cut = buf.rfind(b"}", start, cut)
    return None


def _next_token(buf: bytes, i: int) -> int | None:
    """Index of the first non-blank byte at or after ``i``; None if the window ends."""
    found = _NOT_BLANK.search(buf, i)
    return None if found is None else found.start()


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
