"""Decoding odd and broken files: each is read right or refused with its own reason."""

import io

import numpy as np
import pytest
from makers import (
    bad_corpus,
    blank_png,
    guard_allocations,
    icc_profile,
    noise,
    solid,
    special_entries,
    text_bomb_png,
)
from PIL import EpsImagePlugin, Image, ImageCms, PngImagePlugin

from zhangcolor.constants import MAX_RESIZED_PIXELS
from zhangcolor.images import (
    MAX_SMALL_PNG_CHUNKS,
    RESIZE_ASPECT,
    ImageError,
    find_images,
    header_pixels,
    header_size,
    load_image,
    resized_size,
)


def test_plain_rgb_jpeg_and_png(tmp_path):
    image = load_image(solid(tmp_path / "red.png", (255, 0, 0)))
    assert image.rgb.shape == (30, 40, 3) and image.rgb.dtype == np.float32
    assert np.allclose(image.rgb[0, 0], [1, 0, 0]) and image.alpha is None
    assert not image.gray_source and image.original_size == (40, 30)


def test_resize_to_short_side_keeps_aspect(tmp_path):
    image = load_image(noise(tmp_path / "a.jpg", size=(300, 200)), short_side=50)
    assert image.rgb.shape == (50, 75, 3) and image.original_size == (300, 200)


@pytest.mark.parametrize("case", ["zero-byte", "text", "truncated"])
def test_broken_files_raise_image_error_with_reason(tmp_path, case):
    reasons = {"zero-byte": "empty file", "text": "not an image", "truncated": "truncated"}
    with pytest.raises(ImageError, match=reasons[case]):
        load_image(bad_corpus(tmp_path)[case])


def test_decompression_bomb_is_refused(tmp_path, small_bomb):
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(solid(tmp_path / "big.png", (1, 2, 3), size=(100, 100)))


def test_bytes_decode_as_the_file_does_and_broken_bytes_give_the_same_reasons(tmp_path):
    path = noise(tmp_path / "a.png", size=(20, 10))
    from_bytes, from_file = load_image(path.read_bytes()), load_image(path)
    assert np.array_equal(from_bytes.pixels, from_file.pixels)
    reasons = {"zero-byte": "empty file", "text": "not an image", "truncated": "truncated"}
    for case, file in bad_corpus(tmp_path / "bad").items():
        with pytest.raises(ImageError, match=reasons[case]):
            load_image(file.read_bytes())


def test_max_pixels_refuses_from_the_header_with_the_count(tmp_path):
    path = solid(tmp_path / "big.png", (1, 2, 3), size=(100, 50))
    assert load_image(path, max_pixels=5000).pixels.shape == (50, 100, 3)
    with pytest.raises(ImageError, match=r"100×50 = 5,000; the limit is 4,999"):
        load_image(path.read_bytes(), max_pixels=4999)


def test_sixteen_bit_gray_png_keeps_its_range(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 8).reshape(8, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    image = load_image(path)
    assert image.gray_source and image.rgb.shape == (8, 64, 3)
    assert np.allclose(image.rgb[..., 0], ramp / 65535.0, atol=1e-6)


def test_float_tiff(tmp_path):
    values = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    image = load_image(path)
    assert np.allclose(image.rgb[..., 1], values, atol=1e-6)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = solid(tmp_path / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK")  # red in CMYK
    image = load_image(path)
    assert image.rgb[0, 0, 0] > 0.9 and image.rgb[0, 0, 1:].max() < 0.1


def test_palette_with_transparency_gives_alpha(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 1)
    path = tmp_path / "pal.png"
    image.save(path, transparency=0)
    loaded = load_image(path)
    assert loaded.alpha is not None and loaded.alpha[0, 0] == 1.0 and loaded.alpha[1, 1] == 0.0


def test_la_image_is_gray_with_alpha(tmp_path):
    path = solid(tmp_path / "la.png", (128, 200), mode="LA")
    loaded = load_image(path)
    assert loaded.gray_source and loaded.alpha is not None


def test_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.rgb.shape == (40, 20, 3) and loaded.original_size == (20, 40)
    assert loaded.rgb[2, 10, 0] > 0.8  # the red half is now on top
    assert load_image(path, short_side=10).rgb.shape == (20, 10, 3)


def test_animated_gif_gives_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).rgb[0, 0, 0] > 0.9


def test_find_images_is_recursive_sorted_and_case_insensitive(tmp_path):
    for name in ["b/x.JPG", "a.png", "c/d/e.webp", "notes.txt"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.png", "b/x.JPG", "c/d/e.webp"]


def test_unicode_and_space_paths(tmp_path):
    path = noise(tmp_path / "ünïcode folder" / "a photo ☀.png")
    assert load_image(path).rgb.shape == (32, 48, 3)


# ----------------------------------------------------------------------------- hostile files


def test_a_thin_strip_is_loaded_at_a_size_that_fits_never_refused_for_its_shape(
    tmp_path, monkeypatch
):
    """A 65535×1 PNG at short side 256 would be 16,776,960×256 px (13 GB), and
    was refused for its shape; a 3×500,000 one too. Each is now loaded, at a short side that
    keeps the resize within RESIZE_ASPECT · 256² px, and nothing is decoded or resized big. A
    2×44,000,000 PNG (88 MP of an 86 KB file) is refused for its pixels, as a square of 88 MP
    is, before any is decoded."""
    guard_allocations(monkeypatch)
    wide = tmp_path / "wide.png"
    Image.new("RGB", (65535, 1), (200, 30, 30)).save(wide)
    assert wide.stat().st_size < 300
    thin = blank_png(tmp_path / "thin.png", 3, 500_000)
    for source in (wide, wide.read_bytes()):
        assert load_image(source).pixels.shape == (1, 65535, 3)
        strip = load_image(source, short_side=256)
        assert strip.pixels.shape == (7, 458_745, 3) and strip.original_size == (65535, 1)
        assert np.abs(strip.rgb - strip.rgb[0, 0]).max() < 0.01  # still the one colour
    assert load_image(thin, short_side=256).pixels.shape == (666_667, 4, 3)
    assert load_image(thin, short_side=256, enlarge=False).pixels.shape == (500_000, 3, 3)
    tall = blank_png(tmp_path / "tall.png", 2, 44_000_000)
    for source in (tall, tall.read_bytes()):
        for short_side in (None, 256):
            with pytest.raises(ImageError, match=r"too many pixels \(2×44000000 = 88,000,000; "):
                load_image(source, short_side=short_side)
    assert header_pixels(tall) == 88_000_000  # its header is read, not refused


def test_panoramas_keep_their_shape_and_thinner_strips_get_a_shorter_side(tmp_path):
    assert RESIZE_ASPECT == 50
    panorama = load_image(noise(tmp_path / "pano.png", size=(50 * 8, 8)), short_side=16)
    assert panorama.pixels.shape == (16, 800, 3)
    strip = load_image(noise(tmp_path / "strip.png", size=(50 * 8 + 1, 8)), short_side=16)
    assert strip.pixels.shape == (15, 752, 3)  # 16 × 802 would be over 50 · 16²


@pytest.mark.parametrize("short_side", [1, 16, 256, 2048, 8192])
def test_a_resize_stays_within_its_budget_and_keeps_the_aspect_where_it_can(short_side):
    budget = min(MAX_RESIZED_PIXELS, RESIZE_ASPECT * short_side**2)
    rng = np.random.default_rng(short_side)
    sizes = [(1, 1), (2, 2), (65535, 1), (1, 44_000_000), (9000, 9000), (6000, 4000)]
    sizes += [tuple(int(v) for v in rng.integers(1, 100_000, 2)) for _ in range(200)]
    for size in sizes:
        for enlarge in (True, False):
            got = resized_size(size, short_side, enlarge) or size
            short, long = min(got), max(got)
            assert short * long <= max(budget, size[0] * size[1] if got == size else 0), size
            plain = short_side if enlarge else min(short_side, min(size))
            fits = plain * round(max(size) * plain / min(size)) <= budget
            if fits:
                assert short == plain, (size, got)  # within the budget: the plain resize
            else:
                assert short < plain or short == 1, (size, got)
            if long < budget // max(short, 1):  # the long side was not cut
                assert (
                    abs(long / short - max(size) / min(size)) <= max(size) / min(size) / short + 1
                )
            assert (got[0] >= got[1]) == (size[0] >= size[1]) or short == long


def test_a_large_jpeg_is_decoded_at_the_dct_scale_its_resize_needs(tmp_path, monkeypatch):
    """A JPEG resized to a short side is decoded reduced (Pillow's draft), so a
    9000×9000 one decodes at 1125² for a short side of 256, under the decode limit; decoded
    whole it is refused before any pixel is decoded."""
    path = tmp_path / "big.jpg"
    Image.new("RGB", (9000, 9000), (30, 120, 200)).save(path, quality=50)
    guard_allocations(monkeypatch, max_pixels=2_000_000)
    assert load_image(path, short_side=256).pixels.shape == (256, 256, 3)
    with pytest.raises(ImageError, match=r"9000×9000 = 81,000,000; the limit is 50,000,000"):
        load_image(path)
    assert load_image(path, short_side=256, max_pixels=1_300_000).pixels.shape == (256, 256, 3)


def _chunked_png(path, chunks: int, size: int = 0) -> bytes:
    """An 8×8 PNG with ``chunks`` unknown ancillary chunks of ``size`` bytes before its data."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    data = buffer.getvalue()
    body = b"tEXu" + bytes(size)
    chunk = struct.pack(">I", size) + body + struct.pack(">I", zlib.crc32(body))
    first_idat = data.index(b"IDAT") - 4
    path.write_bytes(data[:first_idat] + chunk * chunks + data[first_idat:])
    return path.read_bytes()


def test_a_png_of_many_small_chunks_is_refused_before_pillow_walks_them(tmp_path):
    """1.6 M empty unknown chunks cost Pillow 9 s of CPU per decode (the server
    decodes every upload). More than MAX_SMALL_PNG_CHUNKS chunks of under 1 KB are refused
    after reading that many chunk headers; real files, and large chunks, pass."""
    import time

    many = tmp_path / "many.png"
    data = _chunked_png(many, 1_600_000)
    for source in (many, data):
        start = time.perf_counter()
        with pytest.raises(ImageError, match=r"a PNG of too many small chunks \(over 4,096"):
            load_image(source)
        assert time.perf_counter() - start < 1.0
    assert header_size(many) is None
    assert load_image(_chunked_png(tmp_path / "some.png", MAX_SMALL_PNG_CHUNKS - 8)).rgb.shape
    assert load_image(_chunked_png(tmp_path / "large.png", 5000, size=1024)).rgb.shape


def test_enlarge_false_only_ever_reduces(tmp_path):
    small = noise(tmp_path / "small.png", size=(20, 10))
    assert load_image(small, short_side=16, enlarge=False).pixels.shape == (10, 20, 3)
    assert load_image(small, short_side=5, enlarge=False).pixels.shape == (5, 10, 3)
    assert load_image(small, short_side=16).pixels.shape == (16, 32, 3)


def test_a_header_error_of_any_type_is_the_files_reason(tmp_path):
    """Pillow raises ValueError for a zTXt chunk over its text limit (a 2 KB file)."""
    path = text_bomb_png(tmp_path / "text.png")
    assert path.stat().st_size < 2500
    with pytest.raises(ValueError, match="Decompressed"):
        Image.open(path)  # what reaches the loader
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageError, match=r"ValueError: Decompressed data too large"):
            load_image(source)
    assert header_pixels(path) == 0


def test_a_decode_error_of_any_type_is_the_files_reason(tmp_path, monkeypatch):
    path = noise(tmp_path / "a.png")

    def load(self):
        raise KeyError("a decoder bug")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    with pytest.raises(ImageError, match=r"cannot decode the image \(KeyError: 'a decoder bug'"):
        load_image(path)


def test_only_the_allowed_decoders_are_reached(tmp_path, monkeypatch):
    """Pillow picks a decoder from the content: an EPS file named .jpg must not reach the EPS
    plugin (which runs Ghostscript where it is installed)."""
    eps = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (10, 200, 10)).save(eps, format="EPS")
    reached = []
    monkeypatch.setattr(
        EpsImagePlugin.EpsImageFile, "_open", lambda self: reached.append(self) or 1 / 0
    )
    for source in (eps, eps.read_bytes()):
        with pytest.raises(ImageError, match=r"not an image Pillow can read .* JPEG, PNG, WEBP"):
            load_image(source)
    assert not reached
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"):  # what the suffixes promise
        path = tmp_path / f"ok.{fmt.lower()}"
        Image.new("RGB", (8, 8), (10, 200, 10)).save(path, format=fmt)
        assert load_image(path).pixels.shape == (8, 8, 3), fmt


def test_folders_fifos_and_broken_links_named_like_images_are_listed_with_reasons(tmp_path):
    entries = special_entries(tmp_path)
    noise(tmp_path / "album.jpg" / "inside.png")
    found = find_images(tmp_path)
    assert found == sorted([*entries.values(), tmp_path / "album.jpg" / "inside.png"])
    reasons = {
        "folder": "a folder named like an image",
        "fifo": r"not a regular file \(a FIFO\)",  # refused without opening: it would block
        "broken link": "broken symbolic link",
    }
    for case, path in entries.items():
        with pytest.raises(ImageError, match=reasons[case]):
            load_image(path)
        assert header_pixels(path) == 0
    assert find_images(tmp_path, exclude=tmp_path / "album.jpg") == sorted(
        [entries["fifo"], entries["broken link"]]
    )


def with_profile(path, pixels: np.ndarray, profile: bytes | None):
    Image.fromarray(pixels).save(path, icc_profile=profile)
    return path


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_an_embedded_icc_profile_is_converted_to_srgb(tmp_path, fmt):
    """Independent reference: a linear-light profile with sRGB's primaries gives sRGB's
    transfer function of the values (IEC 61966-2-1)."""
    levels = np.array([0, 16, 64, 128, 200, 255], np.uint8)
    pixels = np.repeat(np.repeat(levels[None, :, None], 3, axis=2), 8, axis=0).repeat(8, axis=1)
    linear = with_profile(tmp_path / f"linear.{fmt}", pixels, icc_profile("linear light"))
    x = levels / 255.0
    expected = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055) * 255
    got = load_image(linear).pixels[4, 4::8, 0].astype(float)
    assert np.abs(got - expected).max() <= (1.5 if fmt == "png" else 3), (got, expected)


def test_icc_primaries_move_colors_and_srgb_or_broken_profiles_change_nothing(tmp_path):
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    swapped = icc_profile(
        "red and green swapped",
        gamma=2.2,
        primaries=((0.3851, 0.7169, 0.0971), (0.4361, 0.2225, 0.0139), (0.1431, 0.0606, 0.7141)),
    )
    green = load_image(with_profile(tmp_path / "swapped.png", red, swapped)).pixels[0, 0]
    assert green[1] > 150 and green[0] < 20 and green[2] < 20  # its "red" channel is green
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, profile in [("srgb", srgb), ("broken", b"not a profile at all"), ("none", None)]:
        loaded = load_image(with_profile(tmp_path / f"{name}.png", red, profile))
        assert np.array_equal(loaded.pixels, red), name
    rgba = np.concatenate([red, np.full((8, 8, 1), 128, np.uint8)], axis=2)
    loaded = load_image(with_profile(tmp_path / "rgba.png", rgba, swapped))
    assert loaded.pixels[0, 0, 1] > 150 and np.allclose(loaded.alpha, 128 / 255)


def test_colorizes_input_limit_is_the_loaders_own():
    """options may not import images: the two are typed twice, and held equal here."""
    from zhangcolor.images import MAX_DECODED_PIXELS
    from zhangcolor.options import ColorizeConfig

    assert ColorizeConfig().max_pixels == MAX_DECODED_PIXELS
