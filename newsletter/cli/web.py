"""`serve`: the web pages (subscribe, confirm, unsubscribe, preferences, archive) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from newsletter.cli.base import ConfigOption, app, err, settings_for
from newsletter.web import WebLimits, create_app


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")
    ] = 8000,
    subscribe_per_ip: Annotated[
        int | None,
        typer.Option(
            "--subscribe-per-ip", min=1, help="Subscribe posts per IP per window ([web])."
        ),
    ] = None,
    subscribe_per_address: Annotated[
        int | None,
        typer.Option(
            "--subscribe-per-address", min=1, help="Mails to one address per window ([web])."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the subscriber pages; `base_url` in the config is the address readers see."""
    settings = settings_for(ctx, config).overridden(
        {
            "web.subscribe_per_ip": subscribe_per_ip,
            "web.subscribe_per_address": subscribe_per_address,
        }
    )
    limits = WebLimits.from_settings(settings)
    application = create_app(settings, limits=limits)
    err.print(f"serving {settings.base_url} on http://{host}:{port}", markup=False)
    # proxy_headers off: the app reads X-Forwarded-For itself, and only from the proxies named in
    # `[web] trusted_proxies` (uvicorn would trust it from any loopback peer).
    uvicorn.run(application, host=host, port=port, proxy_headers=False, server_header=False)
