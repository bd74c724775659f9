"""Shared fixtures."""

import pytest
from PIL import Image


@pytest.fixture
def small_bomb(monkeypatch):
    """Make Pillow's decompression-bomb limit tiny, so a 100×100 image trips it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Keep the tests' color-table cache out of the user's home."""
    import os

    os.environ["ZHANGCOLOR_CACHE"] = str(tmp_path_factory.mktemp("cache"))
