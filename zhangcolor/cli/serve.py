"""The ``serve`` command: the web page and the REST API."""

from __future__ import annotations

import rich_click as click

from zhangcolor.cli.common import build, config_option, console, field_option
from zhangcolor.options import BACKENDS, DEVICES, PRECISIONS, ServeConfig


@click.command("serve")
@config_option("serve")
@field_option(ServeConfig, "host", "--host")
@field_option(ServeConfig, "port", "--port", type=int)
@field_option(ServeConfig, "model", "--model")
@field_option(ServeConfig, "workers", "--workers", type=int)
@field_option(ServeConfig, "backend", "--backend", type=click.Choice(BACKENDS))
@field_option(ServeConfig, "device", "--device", type=click.Choice(DEVICES))
@field_option(ServeConfig, "precision", "--precision", type=click.Choice(PRECISIONS))
@field_option(ServeConfig, "size", "--size", type=int)
@field_option(ServeConfig, "max_upload_mb", "--max-upload-mb", type=float)
@field_option(ServeConfig, "max_pixels", "--max-pixels", type=int)
@field_option(ServeConfig, "max_aspect", "--max-aspect", type=float)
@field_option(ServeConfig, "read_timeout_s", "--read-timeout-s", type=float)
@field_option(ServeConfig, "upload_timeout_s", "--upload-timeout-s", type=float)
@field_option(ServeConfig, "max_concurrent", "--max-concurrent", type=int)
@field_option(ServeConfig, "max_queue", "--max-queue", type=int)
@field_option(ServeConfig, "max_client_mp", "--max-client-mp", type=float)
@field_option(ServeConfig, "max_connections", "--max-connections", type=int)
@field_option(
    ServeConfig,
    "allowed_hosts",
    "--allowed-host",
    multiple=True,
    callback=lambda ctx, param, value: value or None,  # none given: the config's stand
)
@field_option(ServeConfig, "cache_mb", "--cache-mb", type=float)
@field_option(ServeConfig, "cache_ttl_s", "--cache-ttl-s", type=float)
def serve_command(config_path, **flags) -> None:
    """Serve the web page and the REST API (needs `pip install 'zhangcolor[serve]'`).

    Open http://127.0.0.1:8000/ for the page: upload a photo, compare before and after, move the
    temperature (re-decoded from the cached network output, so the network does not run again),
    add colour points where the model takes them, and download. `POST /api/colorize` takes a
    multipart `image` with `temperature`, `format` and `hints`; the API docs are at `/docs`.
    """
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise click.ClickException(
            f"zhangcolor serve needs the serve extra ({e.name} is missing): "
            "pip install 'zhangcolor[serve]'"
        ) from None
    from zhangcolor.serve import serve

    config = build(ServeConfig, config_path, **flags)
    console.print(
        f"zhangcolor serve: model {config.model} ({config.backend}), "
        f"{config.workers} worker(s); open http://{config.host}:{config.port}/"
    )
    try:
        serve(config)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(f"cannot serve: {e}") from None
