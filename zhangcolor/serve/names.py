"""File names between the server and its clients: an upload's name as the client sent it (RFC
7578 and RFC 5987's ``filename*``), and a download's, with an ASCII fallback beside the UTF-8
name (RFC 6266), so that ``café.png`` comes back as ``café-colorized-T0.36.png``."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

#: Longest file name kept for a download (the stem, without the suffix).
MAX_NAME = 100
#: ``filename*=charset'language'percent-encoded`` in a form part's Content-Disposition.
_EXTENDED = re.compile(rb"filename\*\s*=\s*([\w!#$%&+^`|~.-]+)'[\w-]*'([^;\s]+)", re.IGNORECASE)


def part_filename(disposition: bytes, plain: bytes | None) -> str | None:
    """The file name of a form part: its ``filename*`` (UTF-8 or Latin-1) when it has one, else
    its ``filename`` (``plain``, as the multipart parser read it) as UTF-8; None for a field."""
    match = _EXTENDED.search(disposition)
    if match:
        charset = match.group(1).decode("ascii").lower()
        if charset in ("utf-8", "iso-8859-1"):
            text = match.group(2).decode("ascii", "replace")
            return unquote(text, encoding=charset, errors="replace")
    return None if plain is None else plain.decode("utf-8", "replace")


def safe_stem(name: str | None) -> str:
    """A client's file name as the stem of a download's name: its last path part, without
    control or format characters (NUL, CR, LF, right-to-left overrides), quotes or suffix; at
    most 100 characters; "image" when nothing is left."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in '"')
    stem = Path(name.strip(" .")).stem.strip(" .")
    return stem[:MAX_NAME] or "image"


def ascii_stem(stem: str) -> str:
    """``stem`` in printable ASCII for clients that read only ``filename``: accents dropped
    (é → e), any other character and ``%\\`` as ``_``; "image" when nothing readable is left."""
    text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\x20-\x7e]|[%\\]", "_", text).strip(" ._")
    return text or "image"


@dataclass(frozen=True)
class DownloadName:
    """A result's file name, and the header that gives it to the browser."""

    name: str  # as the user knows it, any characters
    ascii: str  # the fallback for clients that read only ``filename``

    @classmethod
    def of(cls, client_name: str | None, suffix: str) -> DownloadName:
        """``STEM{suffix}`` from the name the client gave (see :func:`safe_stem`)."""
        stem = safe_stem(client_name)
        return cls(f"{stem}{suffix}", f"{ascii_stem(stem)}{suffix}")

    def content_disposition(self) -> str:
        """``inline; filename="…"``, with ``filename*=UTF-8''…`` when the name is not ASCII."""
        header = f'inline; filename="{self.ascii}"'
        if self.name != self.ascii:
            header += f"; filename*=UTF-8''{quote(self.name, safe='')}"
        return header
