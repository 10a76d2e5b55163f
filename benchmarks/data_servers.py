"""SCPs under test for the data benchmarks (C-STORE, C-FIND, C-GET).

``python -m benchmarks.data_servers --impl aiodicom|pynetdicom --mode MODE --port P [--dir D]``

Modes:

* ``store``: C-STORE for CT Image Storage, accept and discard (aiodicom:
  a handler returning 0; pynetdicom: an EVT_C_STORE handler returning
  0x0000 without touching ``event.dataset``, so nothing is decoded);
* ``store-disk`` (aiodicom): ``store_to_directory(--dir, fsync=False)``
  (DCMTK storescp does not fsync either);
* ``find``: C-FIND (Patient Root) yielding ``--matches`` prebuilt Datasets
  for any query;
* ``get``: C-GET (Study Root and Patient Root) returning every Part 10 file
  in ``--dir`` (aiodicom: the paths, sent without re-encoding; pynetdicom:
  ``dcmread(path)`` per instance -- its EVT_C_GET handler refuses paths
  ("Received invalid dataset from callback") -- re-encoded by pynetdicom).

pynetdicom's loggers are silenced; maximum_associations and its listen
backlog are raised as in :mod:`benchmarks.pynd_server`.
"""

from __future__ import annotations

import argparse
import logging
import socket
import os

CT = "1.2.840.10008.5.1.4.1.1.2"


def find_matches(n: int) -> list:  # type: ignore[type-arg]
    from pydicom.dataset import Dataset

    out = []
    for i in range(n):
        ds = Dataset()
        ds.QueryRetrieveLevel = "PATIENT"
        ds.PatientName = f"BENCH^PATIENT{i:05d}"
        ds.PatientID = f"BENCH{i:05d}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        out.append(ds)
    return out


def _files(directory: str) -> list[str]:
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".dcm"))


def run_aiodicom(args: argparse.Namespace) -> int:
    import asyncio

    from aiodicom import Server, serve_find, serve_get, serve_store, store_to_directory
    from aiodicom.cli import run_loop

    async def main() -> int:
        srv = Server("BENCHSCP", max_associations=4096)
        if args.mode == "store":

            class Discard:
                """Like storescp --ignore: read every byte, keep none (a sink that drops fragments)."""

                def write(self, data: memoryview) -> None:
                    pass

                def close(self) -> None:
                    return None

            class DiscardHandler:
                def dataset_sink(self, assoc: object, context_id: int, command: object) -> Discard:
                    return Discard()

                async def __call__(self, req: object) -> int:
                    return 0

            serve_store(srv, DiscardHandler(), sop_classes=[CT])
        elif args.mode == "store-disk":
            serve_store(srv, store_to_directory(args.dir, fsync=False), sop_classes=[CT])
        elif args.mode == "find":
            matches = find_matches(args.matches)

            async def find(req: object):  # type: ignore[no-untyped-def]
                for ds in matches:
                    yield ds

            serve_find(srv, find, models=("patient", "study"))
        elif args.mode == "get":
            files = _files(args.dir)
            serve_get(srv, lambda req: list(files), models=("patient", "study"), storage_classes=[CT], strict=False)
        await srv.start(args.host, args.port)
        print(f"aiodicom {args.mode} SCP on {args.host}:{args.port} ({type(asyncio.get_running_loop()).__module__})",
              flush=True)
        await srv.serve_forever()
        return 0

    return run_loop(main(), use_uvloop=args.loop == "uvloop")


def run_pynetdicom(args: argparse.Namespace) -> int:
    from pynetdicom import AE, evt, transport
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
    )

    for name in ("pynetdicom", "pydicom"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.setLevel(logging.WARNING)
    transport.AssociationServer.request_queue_size = 4096
    # Fairness: pynetdicom has no TCP_NODELAY option; without it each small
    # response (C-FIND pending, C-STORE-RSP) can wait for a delayed ACK, which
    # would count Nagle's delay as our win.  Set it on accepted sockets.
    orig_get_request = transport.AssociationServer.get_request

    def get_request(self: transport.AssociationServer) -> tuple[socket.socket, tuple[str, int]]:
        sock, addr = orig_get_request(self)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    transport.AssociationServer.get_request = get_request  # type: ignore[method-assign]
    ae = AE(ae_title="BENCHSCP")
    ae.maximum_associations = 4096
    handlers = []
    if args.mode == "store":
        ae.add_supported_context(CTImageStorage)
        handlers.append((evt.EVT_C_STORE, lambda event: 0x0000))
    elif args.mode == "find":
        matches = find_matches(args.matches)
        ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)

        def on_find(event):  # type: ignore[no-untyped-def]
            for ds in matches:
                yield 0xFF00, ds

        handlers.append((evt.EVT_C_FIND, on_find))
    elif args.mode == "get":
        from pydicom import dcmread

        files = _files(args.dir)
        ae.add_supported_context(PatientRootQueryRetrieveInformationModelGet)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)

        def on_get(event):  # type: ignore[no-untyped-def]
            yield len(files)
            for path in files:
                yield 0xFF00, dcmread(path)  # pynetdicom's C-GET handler needs Datasets

        handlers.append((evt.EVT_C_GET, on_get))
    else:
        raise SystemExit(f"pynetdicom: mode {args.mode} not supported")
    print(f"pynetdicom {args.mode} SCP on {args.host}:{args.port}", flush=True)
    ae.start_server((args.host, args.port), block=True, evt_handlers=handlers)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", choices=("aiodicom", "pynetdicom"), required=True)
    p.add_argument("--mode", choices=("store", "store-disk", "find", "get"), required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", default=".")
    p.add_argument("--matches", type=int, default=10000)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = p.parse_args()
    return run_aiodicom(args) if args.impl == "aiodicom" else run_pynetdicom(args)


if __name__ == "__main__":
    raise SystemExit(main())
