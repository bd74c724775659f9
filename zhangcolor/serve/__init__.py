"""Serving colorization over HTTP: a REST API, and a web page with a live temperature slider and,
for a model that takes them, a user's colour points (Zhang et al., SIGGRAPH 2017).

The network is the costly step; the annealed-mean decoding at T (paper, section 2.3) is cheap.
So the server keeps each upload's network output, with the photo's L, in a cache bounded in
bytes (least recently used first out) and in time (a time-to-live); a new T only re-decodes, and
new colour points only run the network on the L it has.

Requests are bounded where they could hurt the machine: the upload's size (read in memory, never
spooled to disk) and pixel count (read from the header, before decoding), the form's parts, how
long its headers and body may take to arrive, how many bytes bodies still arriving may hold, how
many connections are open, and the work: each request is priced in megapixels and waits its turn
in a lane of cheap or large work, fairly by client address, within a budget per client (the
network itself runs one batch at a time). Only a request whose body has fully arrived takes a
place, so slow clients cannot take it from others. Every refusal, and any failure, is a JSON
``{"error": code, "detail": message}`` with a 4xx or 5xx status; a 429 or 503 says when to retry.

One module per part, each importing only those before it:

- :mod:`~zhangcolor.serve.errors`: :class:`ApiError`, what the server refuses;
- :mod:`~zhangcolor.serve.names`: file names in and out (``filename*``, ASCII fallbacks);
- :mod:`~zhangcolor.serve.inputs`: an upload's header and pixels, colour points, checked;
- :mod:`~zhangcolor.serve.cache`: the network outputs of uploads, bounded in bytes and time;
- :mod:`~zhangcolor.serve.service`: :class:`ColorizeService`, plain Python, usable without HTTP;
- :mod:`~zhangcolor.serve.uploads`: multipart forms and JSON bodies read in memory under limits;
- :mod:`~zhangcolor.serve.admission`: the work queue: prices, lanes, budgets, fair turns;
- :mod:`~zhangcolor.serve.schema`: the OpenAPI description of every answer;
- :mod:`~zhangcolor.serve.routes`: the API's routes;
- :mod:`~zhangcolor.serve.guard`: the headers every answer carries, and the Host allow-list;
- :mod:`~zhangcolor.serve.connections`: the cap on connections, and quiet accept errors;
- :mod:`~zhangcolor.serve.app`: :func:`create_app`, the app assembled in one place;
- :mod:`~zhangcolor.serve.server`: uvicorn, ``--workers N``, :func:`background_server`.

Needs the ``serve`` extra: ``pip install 'zhangcolor[serve]'``.
"""

from zhangcolor.options import ServeConfig
from zhangcolor.serve.admission import WorkQueue
from zhangcolor.serve.app import create_app, static_dir
from zhangcolor.serve.cache import OutputCache, SingleFlight, Upload
from zhangcolor.serve.errors import ApiError, busy
from zhangcolor.serve.names import DownloadName, safe_stem
from zhangcolor.serve.server import (
    CONFIG_ENV,
    app_from_environment,
    background_server,
    guarded,
    nodelay_http,
    serve,
    worker_http,
)
from zhangcolor.serve.service import ColorizeService, Palette, Rendering, Result
from zhangcolor.serve.uploads import UploadBudget

__all__ = [
    "CONFIG_ENV",
    "ApiError",
    "ColorizeService",
    "DownloadName",
    "OutputCache",
    "Palette",
    "Rendering",
    "Result",
    "ServeConfig",
    "SingleFlight",
    "Upload",
    "UploadBudget",
    "WorkQueue",
    "app_from_environment",
    "background_server",
    "busy",
    "create_app",
    "guarded",
    "nodelay_http",
    "safe_stem",
    "serve",
    "static_dir",
    "worker_http",
]
