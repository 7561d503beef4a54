"""A multipart/form-data reader that hands out a part's bytes without copying them.

aiohttp's own reader (`request.multipart()`) serves a part through
`read_chunk()`, which joins what it read into a window and joins the window
again to search it for the boundary: every byte of a 200 MB upload is copied
several times on the loop, and that was half of the route's CPU. This reader
takes the body's buffers as aiohttp received them (`readchunk()`, which never
joins), searches each one for the delimiter with `bytes.find`, and returns
the data around it as memoryview slices of those same buffers. The only bytes
it copies are a few dozen at the end of each buffer (a delimiter may be split
over two buffers) and the part headers.

The body (RFC 2046, RFC 7578): a preamble, which is ignored; parts, each
after a delimiter line `--boundary`, with headers up to a blank line, then
data; a closing delimiter `--boundary--`; an epilogue, which is never read.
A body that ends before its closing delimiter is malformed.
"""

from __future__ import annotations

import re
import warnings

from aiohttp import StreamReader
from aiohttp.helpers import parse_mimetype
from aiohttp.multipart import (BadContentDispositionHeader, content_disposition_filename,
                               parse_content_disposition)

# What may come before a part's data: its headers, or the preamble before the first part.
# Browsers send a few hundred bytes; more is not a form.
HEAD_LIMIT = 16 * 1024
# RFC 9110's field names, and the control characters a field value may not hold (tab may).
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class Malformed(ValueError):
    """The body is not the multipart/form-data its Content-Type announced."""


class BodyTooLarge(Exception):
    """The body went past the reader's limit."""


class Part:
    """One part, once its headers are read: what they said, and its data to read."""

    def __init__(self, reader: Reader, name: str | None, filename: str | None,
                 content_type: str) -> None:
        self._reader = reader
        self.name = name  # the form field's name
        self.filename = filename  # None unless the part is a file
        self.content_type = content_type

    @property
    def is_multipart(self) -> bool:
        """A multipart inside the multipart (a form never sends one)."""
        return self.content_type.partition("/")[0].strip().lower() == "multipart"

    def __aiter__(self) -> Part:
        return self

    async def __anext__(self) -> bytes | memoryview:
        """`async for chunk in part`: read_chunk until the part's data ends."""
        chunk = await self.read_chunk()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read_chunk(self) -> bytes | memoryview:
        """The part's next bytes, as they arrived; empty once its data has ended.

        A memoryview keeps the whole buffer it is a slice of alive: hand it on,
        don't keep it.
        """
        if self._reader._current is not self:  # the reader has moved on to a later part
            return b""
        return await self._reader._read_data()


class Reader:
    """The parts of a multipart body, one after another: `while part := await reader.next()`."""

    def __init__(self, content: StreamReader, content_type: str, limit: int | None = None) -> None:
        boundary = parse_mimetype(content_type).parameters.get("boundary", "")
        if not 0 < len(boundary) <= 70:  # RFC 2046's bounds
            raise Malformed("the Content-Type has no valid boundary")
        self._content = content
        self._delimiter = b"\r\n--" + boundary.encode("utf-8", "surrogateescape")
        # What is received and not yet handed out is self._buffer[self._position:]. The body
        # starts as if after a line break, so that its first delimiter, which has none
        # before it when there is no preamble, is found like every other one.
        self._buffer = b"\r\n"
        self._position = 0
        self._in_data = True  # before the next delimiter: a part's data, or the preamble
        self._current: Part | None = None
        self._ended = False
        # The whole body's bytes, parts after the file and between them included: a
        # body without Content-Length is otherwise bounded by nothing.
        self._limit, self._received = limit, 0

    async def next(self) -> Part | None:
        """The next part, its headers read; None after the closing delimiter."""
        if self._ended:
            return None
        skipped = 0  # what is left of the previous part's data, or the preamble
        while chunk := await self._read_data():
            skipped += len(chunk)
            if self._current is None and skipped > HEAD_LIMIT:
                raise Malformed(f"no boundary in the body's first {HEAD_LIMIT} bytes")
        head = await self._read_head()
        if head is None:
            self._ended, self._current = True, None
            return None
        self._in_data = True
        self._current = Part(self, *_parse_head(head))
        return self._current

    async def _read_data(self) -> bytes | memoryview:
        """The bytes before the next delimiter, a piece at a time; empty once it is reached."""
        delimiter = self._delimiter
        while self._in_data:
            buffer, start = self._buffer, self._position
            found = buffer.find(delimiter, start)
            if found >= 0:
                self._position, self._in_data = found + len(delimiter), False
                return memoryview(buffer)[start:found]
            # The buffer's last bytes may be the start of a delimiter that the next
            # buffer completes: hand out everything before them, hold them back.
            held_from = max(start, len(buffer) - len(delimiter) + 1)
            if held_from > start:
                # Only those few bytes are kept (copied), not the whole buffer: once the
                # caller is done with the data, the buffer is freed, and an upload that
                # waits for its next bytes holds none of its last ones.
                self._buffer, self._position = buffer[held_from:], 0
                return memoryview(buffer)[start:held_from]
            held = buffer[start:]
            following = await self._read()
            # A delimiter that starts in the held bytes ends in the next buffer's first
            # bytes: search the two together, a few dozen bytes, not a join of the buffers.
            bridge = held + following[: len(delimiter) - 1]
            found = bridge.find(delimiter)
            if found >= 0:
                self._buffer, self._position = following, found + len(delimiter) - len(held)
                self._in_data = False
                return bridge[:found]
            if len(following) < len(delimiter) - 1:  # a tiny buffer: the bridge is all of it
                self._buffer, self._position = bridge, 0
                continue
            self._buffer, self._position = following, 0
            if held:
                return held
        return b""

    async def _read_head(self) -> bytes | None:
        """What follows a delimiter, up to the blank line that ends the part's headers;
        None if it is the closing delimiter."""
        head = bytearray()
        while True:
            # at most HEAD_LIMIT, plus the blank line, copied from one buffer
            taken = self._buffer[self._position : self._position + HEAD_LIMIT + 4 - len(head)]
            searched_from = max(0, len(head) - 3)  # the blank line may straddle two buffers
            head += taken
            if head.startswith(b"--"):  # the closing delimiter: the rest is the epilogue
                return None
            end = head.find(b"\r\n\r\n", searched_from)
            if end >= 0:
                self._position += len(taken) - (len(head) - end - 4)
                return bytes(head[:end])
            # the same bound however the bytes were split: a buffer's bytes are taken up
            # to the blank line's last possible byte, and so are a byte at a time
            if len(head) >= HEAD_LIMIT + 4:
                raise Malformed(f"a part's headers are longer than {HEAD_LIMIT} bytes")
            self._buffer, self._position = await self._read(), 0

    async def _read(self) -> bytes:
        """The next buffer of the body as received; an end before the closing delimiter is malformed."""
        while True:
            # readchunk, not readany: readany joins the buffers that wait into one
            data, end_of_http_chunk = await self._content.readchunk()
            if data:
                self._received += len(data)
                if self._limit is not None and self._received > self._limit:
                    raise BodyTooLarge(f"the body is over {self._limit} bytes")
                return data
            if not end_of_http_chunk:
                raise Malformed("the body ended before its closing boundary")


def _parse_head(head: bytes) -> tuple[str | None, str | None, str]:
    """A part's name, file name and Content-Type, from the bytes after its delimiter."""
    padding, *lines = head.split(b"\r\n")
    if padding.strip(b" \t"):  # only white space may follow a delimiter on its line
        raise Malformed("a boundary is followed by other bytes")
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        # a NUL or a bare CR or LF could make this part mean one thing here and
        # another to a proxy or a log reader: refused, as aiohttp's reader does
        if not colon or not _FIELD_NAME.fullmatch(name) or _FORBIDDEN_IN_VALUE.search(value):
            raise Malformed("a part's headers are invalid")
        key = name.decode("ascii").lower()
        if key in ("content-disposition", "content-type"):
            if key in fields:
                raise Malformed(f"a part has two {name.decode('ascii')} headers")
            # as aiohttp decodes header values: bytes that are not UTF-8 survive as
            # surrogates, which the route drops from a file name
            fields[key] = value.strip(b" \t").decode("utf-8", "surrogateescape")
    disposition = fields.get("content-disposition")
    if disposition is None:
        raise Malformed("a part has no Content-Disposition header")
    with warnings.catch_warnings():
        # aiohttp warns of a header it cannot read, and gives it no type: refused below
        warnings.simplefilter("ignore", BadContentDispositionHeader)
        kind, params = parse_content_disposition(disposition)
    field_name = content_disposition_filename(params, "name")
    if kind is None or field_name is None:
        # e.g. name="a"; x=y.mp4": a quote inside a name, which the client did not escape
        raise Malformed("a part's Content-Disposition cannot be read, or names no field; "
                        "a quote in a field or file name must be sent as %22")
    return field_name, content_disposition_filename(params, "filename"), fields.get("content-type", "")
