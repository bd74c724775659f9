"""Serving colorization over HTTP: a REST API, and a web page with a live temperature slider.

The network is the costly step; the annealed-mean decoding at T (paper, section 2.3) is cheap.
So the server keeps each upload's network output, with the photo's L, in a cache bounded in
bytes (least recently used first out) and in time (a time-to-live); a new T only re-decodes.

Requests are bounded where they could hurt the machine: the upload's size (read in memory, never
spooled to disk), its pixel count and aspect ratio (read from the header, before decoding), the
form's parts, how long its headers and body may take to arrive, how many bytes bodies still
arriving may hold, how many requests are worked on at once (the network itself runs one batch at
a time), and how many may wait. Only a request whose body has fully arrived takes a place in that
queue, so slow clients cannot take it from others. Every refusal, and any failure, is a JSON
``{"error": code, "detail": message}`` with a 4xx or 5xx status; a 503 says when to retry.

One module per part, each importing only those before it:

- :mod:`~zhangcolor.serve.cache`: the network outputs of uploads, bounded in bytes and time;
- :mod:`~zhangcolor.serve.service`: :class:`ColorizeService`, plain Python, usable without HTTP;
- :mod:`~zhangcolor.serve.uploads`: multipart forms read in memory under limits;
- :mod:`~zhangcolor.serve.routes`: the API's routes and the queue of requests;
- :mod:`~zhangcolor.serve.app`: :func:`create_app`, the app assembled in one place;
- :mod:`~zhangcolor.serve.server`: uvicorn, ``--workers N``, :func:`background_server`.

Needs the ``serve`` extra: ``pip install 'zhangcolor[serve]'``.
"""

from zhangcolor.options import ServeConfig
from zhangcolor.serve.app import create_app, static_dir
from zhangcolor.serve.cache import OutputCache, Upload
from zhangcolor.serve.routes import RequestQueue
from zhangcolor.serve.server import (
    CONFIG_ENV,
    app_from_environment,
    background_server,
    nodelay_http,
    serve,
    worker_http,
)
from zhangcolor.serve.service import ApiError, ColorizeService, Rendering, Result, busy, safe_stem
from zhangcolor.serve.uploads import UploadBudget

__all__ = [
    "CONFIG_ENV",
    "ApiError",
    "ColorizeService",
    "OutputCache",
    "Rendering",
    "RequestQueue",
    "Result",
    "ServeConfig",
    "Upload",
    "UploadBudget",
    "app_from_environment",
    "background_server",
    "busy",
    "create_app",
    "nodelay_http",
    "safe_stem",
    "serve",
    "static_dir",
    "worker_http",
]
