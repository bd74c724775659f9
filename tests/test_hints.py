"""A user's colour points: their JSON, every way they can be wrong (each a clear message naming
the file and the point), their colour's ab against skimage, and their channels at the working
size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage import color as skcolor

from zhangcolor.hints import (
    DEFAULT_PATCH,
    MAX_POINTS,
    HintError,
    hex_to_ab,
    hints_json,
    load_hints,
    parse_hints,
    rasterize,
)


@pytest.mark.parametrize("hex_color", ["#c03020", "#2050A0", "#fff", "#000000", "#7f7f7f"])
def test_a_colour_s_ab_is_skimage_s(hex_color):
    digits = hex_color[1:] if len(hex_color) == 7 else "".join(c * 2 for c in hex_color[1:])
    rgb = np.array([[[int(digits[i : i + 2], 16) for i in (0, 2, 4)]]]) / 255.0
    expected = skcolor.rgb2lab(rgb)[0, 0, 1:]
    assert np.allclose(hex_to_ab(hex_color), expected, atol=1e-6)


def test_points_parse_from_the_files_shape_and_round_trip(tmp_path):
    value = {"points": [{"x": 120, "y": 45, "color": "#c03020"}, {"x": 0, "y": 0.5,
             "color": "#2050a0", "size": 12}]}  # fmt: skip
    hints = parse_hints(value, 640, 480)
    assert [(h.x, h.y, h.size) for h in hints] == [(120, 45, None), (0, 0.5, 12)]
    path = tmp_path / "photo.json"
    path.write_text(hints_json(hints))
    assert load_hints(path, 640, 480) == hints
    assert parse_hints(value["points"], 640, 480) == hints  # a bare list too
    assert parse_hints({"points": []}, 10, 10) == []


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (
            {"points": [{"x": 640, "y": 5, "color": "#fff"}]},
            "point 0: (640, 5) is outside the 640×480",
        ),
        ({"points": [{"x": -1, "y": 5, "color": "#fff"}]}, "outside"),
        ({"points": [{"x": 1, "y": 5, "color": "red"}]}, "point 0: color 'red' is not a CSS hex"),
        ({"points": [{"x": 1, "y": 5, "color": "#12345"}]}, "not a CSS hex"),
        ({"points": [{"x": "1", "y": 5, "color": "#fff"}]}, "point 0: x is '1', not a finite"),
        ({"points": [{"x": float("nan"), "y": 5, "color": "#fff"}]}, "not a finite number"),
        ({"points": [{"x": 1, "y": 5}]}, "point 0: no color"),
        ({"points": [{"x": 1, "y": 5, "color": "#fff", "alpha": 1}]}, "unknown keys ['alpha']"),
        ({"points": [{"x": 1, "y": 2, "color": "#fff"}, [1, 2]]}, "point 1 is a list"),
        ({"points": [{"x": 1, "y": 5, "color": "#fff", "size": 0}]}, "size 0 is not in (0, 640]"),
        ({"dots": []}, 'expected {"points": [...]}'),
        ({"points": "all"}, "the points must be a list"),
        ({"points": [{"x": 1, "y": 1, "color": "#fff"}] * (MAX_POINTS + 1)}, "at most 1,000"),
    ],
)
def test_bad_points_are_refused_with_the_point_and_the_reason(value, words):
    with pytest.raises(HintError) as caught:
        parse_hints(value, 640, 480, where="photo.json")
    assert str(caught.value).startswith("photo.json") and words in str(caught.value)


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"{not json", "not JSON"), (b"\xff\xfe", "not a UTF-8"), (b"[1, 2]", "point 0 is a int")],
)
def test_a_bad_hint_file_names_itself(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(HintError) as caught:
        load_hints(path, 64, 64)
    assert str(path) in str(caught.value) and words in str(caught.value)


def test_rasterize_puts_each_point_where_the_working_size_sees_it():
    hints = parse_hints(
        [
            {"x": 0, "y": 0, "color": "#c03020"},  # the top-left pixel of a 640×480 photo
            {"x": 639, "y": 479, "color": "#2050a0", "size": 40},  # bottom-right, 40 px
        ],
        640,
        480,
    )
    channels = rasterize(hints, 640, 480, 64)
    assert channels.shape == (1, 3, 64, 64) and channels.dtype == torch.float32
    mask = channels[0, 2]
    # The default 3 × 3 patch, moved inside the photo at its corner.
    assert mask[:DEFAULT_PATCH, :DEFAULT_PATCH].all() and mask[:4, :4].sum() == DEFAULT_PATCH**2
    a, b = hints[0].ab
    assert torch.allclose(channels[0, :2, 0, 0], torch.tensor([a, b]) / 110)
    # 40 input px is 4 working px across (64/640) and 5.3 down (64/480): a 4 × 5 patch.
    assert int(mask[50:, 50:].sum()) == 4 * 5
    assert mask.sum() == DEFAULT_PATCH**2 + 20
    none = rasterize([], 640, 480, 64)
    assert not none.any()


def test_a_later_point_covers_an_earlier_one():
    hints = parse_hints(
        [{"x": 5, "y": 5, "color": "#ff0000", "size": 5}, {"x": 5, "y": 5, "color": "#0000ff"}],
        10,
        10,
    )
    channels = rasterize(hints, 10, 10, 10)
    assert torch.allclose(channels[0, :2, 5, 5], torch.tensor(hints[1].ab) / 110)
    assert torch.allclose(channels[0, :2, 3, 3], torch.tensor(hints[0].ab) / 110)


def test_hints_json_is_what_the_cli_reads(tmp_path):
    text = hints_json(parse_hints([{"x": 3, "y": 4, "color": "#abcdef"}], 10, 10))
    assert json.loads(text) == {"points": [{"x": 3.0, "y": 4.0, "color": "#abcdef"}]}
