"""`admin serve`: the staff console under uvicorn, on a listener of its own."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from newsletter.cli.base import ConfigOption, err, group, settings_for
from newsletter.console import create_admin_app

admin_app = group("admin", "The staff console (accounts: `newsletter staff`).")


@admin_app.command("serve")
def admin_serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")
    ] = 8001,
    config: ConfigOption = None,
) -> None:
    """Serve the console at /admin; who may reach it is `[admin] allow_networks`."""
    settings = settings_for(ctx, config)
    application = create_admin_app(settings)
    networks = ", ".join(settings.admin.allow_networks)
    err.print(f"staff console on http://{host}:{port}/admin (clients: {networks})", markup=False)
    # proxy_headers off: the console reads X-Forwarded-* itself, from `[admin] trusted_proxies`.
    uvicorn.run(application, host=host, port=port, proxy_headers=False, server_header=False)
