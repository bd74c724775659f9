"""zhangcolor: Colorful Image Colorization (Zhang, Isola & Efros, ECCV 2016) in PyTorch.

``from zhangcolor import Colorizer`` gives the colorizing API; it is imported on first use, so
that the command line starts without loading torch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zhangcolor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Colorizer", "__version__"]


def __getattr__(name: str):
    if name == "Colorizer":
        from zhangcolor.colorize import Colorizer

        return Colorizer
    raise AttributeError(f"module 'zhangcolor' has no attribute {name!r}")
