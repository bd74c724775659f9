"""Temperatures far below any useful T (1e-45, 1e-320) are refused with the documented floor,
everywhere a T comes in: the decoder, the Python API, the CLI and the server. They used to pass
validation and decode to NaN (a traceback, or a 500 from the server)."""

from __future__ import annotations

import pytest
import torch
from makers import noise, photo_bytes
from PIL import Image
from test_colorize import invoke, make_checkpoint

from zhangcolor import Colorizer
from zhangcolor.bins import ab_bins
from zhangcolor.constants import MIN_TEMPERATURE
from zhangcolor.decode import annealed_mean, check_colorize_temperature, mode

TINY = [1e-45, 1e-320, 1e-39, MIN_TEMPERATURE / 2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.mark.parametrize("t", TINY)
def test_the_decoder_refuses_temperatures_below_the_floor(t):
    with pytest.raises(ValueError, match=f"at least {MIN_TEMPERATURE:g}"):
        annealed_mean(torch.randn(1, 313, 2, 2), ab_bins(), t)
    with pytest.raises(ValueError, match=f"at least {MIN_TEMPERATURE:g}"):
        check_colorize_temperature(t)


def test_the_floor_already_decodes_the_mode_and_stays_finite():
    """At the floor, float32 logits as large as a network gives decode to the mode, finite."""
    logits = torch.randn(2, 313, 4, 4) * 30
    ab = annealed_mean(logits, ab_bins(), MIN_TEMPERATURE)
    assert torch.isfinite(ab).all()
    assert (ab - mode(logits, ab_bins())).abs().max() < 0.5


@pytest.mark.parametrize("t", [1e-45, 1e-320])
def test_the_python_api_and_the_cli_refuse_them(checkpoint, tmp_path, t):
    colorizer = Colorizer.load(checkpoint, size=32)
    with pytest.raises(ValueError, match=f"at least {MIN_TEMPERATURE:g}"):
        colorizer.colorize(Image.new("L", (16, 16)), t)
    photo = noise(tmp_path / "a.png")
    result = invoke("colorize", photo, "--model", checkpoint, "--size", 32, "-t", str(t))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "0.001" in result.output
    assert not (tmp_path / "colorized").exists()


def test_the_server_answers_422_for_them(checkpoint):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from zhangcolor.serve import ColorizeService, ServeConfig, create_app

    service = ColorizeService.load(ServeConfig(model=str(checkpoint), size=32))
    with TestClient(create_app(service=service)) as client:
        files = {"image": ("a.png", photo_bytes(0), "application/octet-stream")}
        bad = client.post("/api/colorize", files=files, data={"temperature": "1e-320"})
        assert bad.status_code == 422 and bad.json()["error"] == "bad_temperature"
        good = client.post("/api/colorize", files=files, data={"temperature": "0.38"})
        assert good.status_code == 200, good.text
        upload = good.headers["X-Upload-Id"]
        bad = client.get(f"/api/colorize/{upload}", params={"temperature": "1e-45"})
        assert bad.status_code == 422 and bad.json()["error"] == "bad_temperature"
