"""Image files made by the tests themselves: tests read no data from outside the repository
and nothing from the network."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def solid(path: Path, rgb: tuple[int, int, int], size=(40, 30), mode="RGB", **save) -> Path:
    """A one-color image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, rgb).save(path, **save)
    return path


def noise(path: Path, size=(48, 32), seed=0) -> Path:
    """A colorful random image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def bad_corpus(folder: Path) -> dict[str, Path]:
    """Files that must be skipped with a reason, by name of the case."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}
    cases["zero-byte"] = folder / "empty.jpg"
    cases["zero-byte"].write_bytes(b"")
    cases["text"] = folder / "notes.jpg"
    cases["text"].write_text("this is not a picture\n")
    good = noise(folder / "_full.jpg", size=(64, 64))
    data = good.read_bytes()
    cases["truncated"] = folder / "truncated.jpg"
    cases["truncated"].write_bytes(data[: len(data) // 2])
    good.unlink()
    return cases


def photo_bytes(seed: int, size=(96, 72), fmt="PNG", mode="RGB") -> bytes:
    """A smooth random color picture's file bytes (distinct per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    image = Image.fromarray(small, "RGBA").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- hostile files


def blank_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 1-bit PNG of any size, written without holding its pixels: a
    2×44,000,000 one is 86 KB and takes a quarter of a second."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    rows_per_block = max(1, (1 << 22) // len(row))
    compressor, idat = zlib.compressobj(9), []
    for top in range(0, height, rows_per_block):
        idat.append(compressor.compress(row * min(rows_per_block, height - top)))
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, gray
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(idat))
        + chunk(b"IEND", b"")
    )
    return path


def text_bomb_png(path: Path) -> Path:
    """A 2 KB PNG whose zTXt chunk inflates past Pillow's text limit: Pillow raises ValueError
    ("Decompressed data too large") while reading the header."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "0" * 2 * PngImagePlugin.MAX_TEXT_CHUNK, zip=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 20, 20)).save(path, pnginfo=info)
    return path


def guard_allocations(monkeypatch, max_pixels: int = 10_000_000) -> None:
    """Make decoding or resizing to more than ``max_pixels`` pixels an AssertionError, so a test
    shows an image is refused before it is decoded big, and a regression fails the test instead
    of taking the machine's memory."""
    from PIL import ImageFile

    load, resize = ImageFile.ImageFile.load, Image.Image.resize

    def guarded_load(self):
        if self.width * self.height > max_pixels:
            raise AssertionError(f"decoded {self.width}×{self.height} pixels")
        return load(self)

    def guarded_resize(self, size, *args, **kwargs):
        if size[0] * size[1] > max_pixels:
            raise AssertionError(f"resized to {size[0]}×{size[1]} pixels")
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded_load)
    monkeypatch.setattr(Image.Image, "resize", guarded_resize)


#: What the loaders say of each hostile file these makers write, by its usual name: a
#: 2×44,000,000 PNG ("strip.png": 88 MP of an 86 KB file, over the loaders' decode limit),
#: :func:`text_bomb_png` ("text.png"), and :func:`special_entries`. (A 65535×1 PNG is no longer
#: refused: it is loaded at a short side that fits the resize budget.)
HOSTILE_REASONS = {
    "strip.png": "too many pixels (2×44000000 = 88,000,000; the limit is 50,000,000)",
    "text.png": "ValueError: Decompressed data too large",
    "album.jpg": "a folder named like an image",
    "pipe.jpg": "not a regular file (a FIFO)",
    "gone.png": "broken symbolic link",
}


def special_entries(folder: Path) -> dict[str, Path]:
    """Entries named like images that are not image files: a folder, a FIFO, a broken link."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    entries = {
        "folder": folder / "album.jpg",
        "fifo": folder / "pipe.jpg",
        "broken link": folder / "gone.png",
    }
    entries["folder"].mkdir()
    os.mkfifo(entries["fifo"])
    entries["broken link"].symlink_to(folder / "nowhere.png")
    return entries


#: sRGB's primaries adapted to the ICC's D50 white, as an ICC profile's rXYZ, gXYZ and bXYZ.
SRGB_D50_PRIMARIES = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def icc_profile(description: str, gamma: float = 1.0, primaries=SRGB_D50_PRIMARIES) -> bytes:
    """A minimal ICC v2 RGB display profile (matrix and one gamma per channel), built by hand:
    Pillow can make no RGB profile but sRGB's."""
    import struct

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(values) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(v) for v in values)

    text = description.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(primaries[0])),
        (b"gXYZ", xyz(primaries[1])),
        (b"bXYZ", xyz(primaries[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)  # perceptual intent
        + b"".join(s15(v) for v in (0.9642, 1.0, 0.8249))
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + data
