"""Shared fixtures."""

import pytest
from PIL import Image


@pytest.fixture
def small_bomb(monkeypatch):
    """Make Pillow's decompression-bomb limit tiny, so a 100×100 image trips it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
