"""An SCP embedded in an existing asyncio application.

    python examples/embedded_scp.py [DICOM_PORT] [STATUS_PORT] [STORAGE_DIR]

One event loop runs both a DICOM Storage SCP (C-ECHO, C-STORE to a folder)
and the application's own TCP service (here: a line protocol on STATUS_PORT
answering ``stats`` with the number of stored instances and the
``aiodicom.events`` counters).  Nothing is threaded: the SCP is just another
server on the loop, started with ``await server.start(...)`` and closed with
``await server.close()``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiodicom
from aiodicom import events


async def main(
    dicom_port: int = 11112,
    status_port: int = 8081,
    storage_dir: str | Path | None = None,
    *,
    ready: Callable[[int, int], Any] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until ``stop`` is set (or forever); returns the number of stored instances."""
    storage = Path(storage_dir or tempfile.mkdtemp(prefix="aiodicom-scp-"))
    stored = 0

    async def on_stored(req: aiodicom.StoreRequest, path: Path) -> None:
        nonlocal stored
        stored += 1

    events.enable_counters()
    scp = aiodicom.Server("EMBEDDED")
    aiodicom.serve_store(scp, aiodicom.store_to_directory(storage, fsync=False, on_stored=on_stored))
    await scp.start("127.0.0.1", dicom_port)

    async def status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for line in reader:
            if line.strip() == b"stats":
                info = {"stored": stored, "storage": str(storage), **events.counters()}
                writer.write(json.dumps(info).encode() + b"\n")
            else:
                writer.write(b"unknown command\n")
            await writer.drain()
        writer.close()

    app = await asyncio.start_server(status, "127.0.0.1", status_port)
    ports = (scp.port, app.sockets[0].getsockname()[1])
    print(f"DICOM SCP 'EMBEDDED' on port {ports[0]}, status service on port {ports[1]}, storing in {storage}")
    if ready is not None:
        ready(*ports)
    try:
        async with app:
            if stop is None:
                await asyncio.gather(scp.serve_forever(), app.serve_forever())
            else:
                await stop.wait()
    finally:
        await scp.close()
        events.disable_counters()
    return stored


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(int(a[0]) if a else 11112, int(a[1]) if len(a) > 1 else 8081, a[2] if len(a) > 2 else None))
