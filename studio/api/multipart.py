"""A streaming multipart/form-data reader: the file part goes straight to its consumer, never to a spool.

Starlette's own form parser copies every file into a temporary file first; for multi-GB datasets
that doubles the disk writes. Here the file part's bytes are yielded as they arrive, and small text
fields (`purpose`) are collected on the side, whatever their order in the body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from studio.errors import InvalidInput

MAX_FIELD_BYTES = 64 << 10
MAX_PARTS = 16


class MultipartUpload:
    """Reads one request: `fields` and `filename` are complete once `file_chunks()` is exhausted."""

    def __init__(self, request: Request, *, file_field: str) -> None:
        self._request = request
        self._file_field = file_field
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.saw_file = False
        self._file_complete = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name: str | None = None
        self._in_file = False
        self._field_data = bytearray()
        self._file_data: list[bytes] = []
        self._parts = 0

    def _boundary(self) -> bytes:
        content_type = self._request.headers.get("content-type", "")
        kind, params = parse_options_header(content_type)
        if kind != b"multipart/form-data" or b"boundary" not in params:
            raise InvalidInput(
                "send the file as multipart/form-data with a 'file' part",
                param="file",
                code="invalid_content_type",
            )
        boundary: bytes = params[b"boundary"]
        return boundary

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """Yield the file part's bytes as they arrive.

        Raises:
            InvalidInput: not multipart, malformed, no file part, or an oversized text field.
        """
        parser = MultipartParser(
            self._boundary(),
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
            },
        )
        try:
            async for chunk in self._request.stream():
                parser.write(chunk)
                if self._file_data:
                    data = b"".join(self._file_data) if len(self._file_data) > 1 else self._file_data[0]
                    self._file_data.clear()
                    yield data
            parser.finalize()
        except FormParserError as exc:
            raise InvalidInput(
                f"malformed multipart body: {exc}", param="file", code="invalid_multipart"
            ) from exc
        if self.saw_file and not self._file_complete:
            # The body stopped before the file part's closing boundary: what arrived is a fragment.
            raise InvalidInput(
                "the multipart body ended inside the file part (no closing boundary)",
                param=self._file_field,
                code="invalid_multipart",
            )
        if not self.saw_file:
            raise InvalidInput(
                f"no '{self._file_field}' file part in the form", param=self._file_field, code="missing_file"
            )

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidInput("too many parts in the form", code="invalid_multipart")
        self._disposition = b""
        self._name = None
        self._in_file = False
        self._field_data = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", errors="replace")
        if self._name == self._file_field:
            if self.saw_file:
                raise InvalidInput(
                    "send one file per request", param=self._file_field, code="invalid_multipart"
                )
            self.saw_file = True
            self._in_file = True
            raw = options.get(b"filename")
            self.filename = None if raw is None else raw.decode("utf-8", errors="replace")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._file_data.append(data[start:end])
            return
        self._field_data += data[start:end]
        if len(self._field_data) > MAX_FIELD_BYTES:
            raise InvalidInput(
                f"form field {self._name!r} is too large", param=self._name, code="invalid_multipart"
            )

    def _on_part_end(self) -> None:
        if self._in_file:
            self._file_complete = True
        elif self._name:
            self.fields[self._name] = self._field_data.decode("utf-8", errors="replace")
        self._in_file = False
