"""zhangcolor: Colorful Image Colorization (Zhang, Isola & Efros, ECCV 2016) in PyTorch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zhangcolor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
