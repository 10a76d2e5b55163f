"""An HTTP endpoint that answers by querying a PACS through an aiodicom.Pool.

    python examples/fastapi_style_service.py PACS_HOST PACS_PORT PACS_AE [HTTP_PORT]
    curl 'http://127.0.0.1:8080/studies?PatientID=123'

The HTTP side is a deliberately tiny HTTP/1.1 handler on the stdlib's
``asyncio.start_server`` so that the example needs nothing else.  With
FastAPI it is the same pattern: create the Pool in the lifespan handler and
use it from ``async def`` endpoints::

    @asynccontextmanager
    async def lifespan(app):
        async with aiodicom.Pool(PACS_HOST, PACS_PORT, called_ae=PACS_AE, contexts=[...]) as pool:
            app.state.pool = pool
            yield

    @app.get("/studies")
    async def studies(PatientID: str, request: Request):
        return [study_json(ds) async for _, ds in request.app.state.pool.find(q, "study") if ds]

Concurrent HTTP requests share at most ``max_associations`` associations;
a client that disconnects cancels its handler, which cancels the C-FIND
(C-CANCEL) and returns the association to the pool.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydicom.dataset import Dataset

import aiodicom

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION = "1.2.840.10008.1.1"


async def find_studies(pool: aiodicom.Pool, patient_id: str) -> list[dict[str, str]]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.PatientName = ""
    query.StudyInstanceUID = ""
    query.StudyDate = ""
    out = []
    async with pool.find(query, "study") as results:
        async for _status, ds in results:
            if ds is not None:
                out.append({
                    "PatientID": str(ds.get("PatientID", "")),
                    "PatientName": str(ds.get("PatientName", "")),
                    "StudyInstanceUID": str(ds.get("StudyInstanceUID", "")),
                    "StudyDate": str(ds.get("StudyDate", "")),
                })
    return out


def _response(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


async def handle_http(pool: aiodicom.Pool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request_line = (await reader.readline()).decode("latin-1").split()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # skip the headers
        if len(request_line) < 2 or request_line[0] != "GET":
            writer.write(_response("405 Method Not Allowed", b"{}"))
            return
        url = urlsplit(request_line[1])
        params = parse_qs(url.query)
        if url.path == "/studies":
            studies = await find_studies(pool, params.get("PatientID", [""])[0])
            writer.write(_response("200 OK", json.dumps(studies).encode()))
        elif url.path == "/health":
            status = await pool.echo()
            writer.write(_response("200 OK", json.dumps({"echo": status, "pool_size": pool.size}).encode()))
        else:
            writer.write(_response("404 Not Found", b"{}"))
    except aiodicom.DICOMError as exc:
        writer.write(_response("502 Bad Gateway", json.dumps({"error": str(exc)}).encode()))
    finally:
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()


async def main(
    pacs_host: str = "127.0.0.1",
    pacs_port: int = 11112,
    pacs_ae: str = "ANY-SCP",
    http_port: int = 8080,
    *,
    ready: Callable[[int], Any] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve HTTP on ``http_port`` until ``stop`` is set (or forever).

    ``ready(port)`` is called with the bound HTTP port once listening.
    """
    async with aiodicom.Pool(
        pacs_host, pacs_port, called_ae=pacs_ae, contexts=[VERIFICATION, STUDY_ROOT_FIND], max_associations=4
    ) as pool:
        server = await asyncio.start_server(lambda r, w: handle_http(pool, r, w), "127.0.0.1", http_port)
        port = server.sockets[0].getsockname()[1]
        print(f"HTTP on http://127.0.0.1:{port}/studies?PatientID=... -> {pacs_ae}@{pacs_host}:{pacs_port}")
        if ready is not None:
            ready(port)
        async with server:
            if stop is None:
                await server.serve_forever()
            else:
                await stop.wait()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], int(a[1]), a[2], int(a[3]) if len(a) > 3 else 8080))
