"""pynetdicom Verification SCP used as a benchmark subject.

``python -m benchmarks.pynd_server --port P [--nodelay]``

Configuration (printed by the runner's legend):

* ``AE`` with the Verification SOP Class, ``start_server(block=True)``;
* pynetdicom's loggers silenced (handlers cleared, level WARNING);
* ``maximum_associations`` raised from 10 to 4096 and the listen backlog
  (``socketserver`` ``request_queue_size``) raised from 5 to 4096, so 64
  concurrent clients are neither rejected nor dropped by a full backlog;
  aiodicom's server listens with a backlog of 4096 as well;
* ``--nodelay``: pynetdicom has no TCP_NODELAY option (its ``_config`` has
  none), so accepted sockets get it set by wrapping
  ``AssociationServer.get_request``.
"""

from __future__ import annotations

import argparse
import logging
import socket


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--aet", default="PYNETDICOM")
    p.add_argument("--max-associations", type=int, default=4096, help="pynetdicom's maximum_associations [4096]")
    p.add_argument("--nodelay", action="store_true", help="set TCP_NODELAY on accepted sockets")
    args = p.parse_args()

    from pynetdicom import AE, transport
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    for name in ("pynetdicom", "pydicom"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.setLevel(logging.WARNING)

    transport.AssociationServer.request_queue_size = max(4096, args.max_associations)
    if args.nodelay:
        orig = transport.AssociationServer.get_request

        def get_request(self: transport.AssociationServer) -> tuple[socket.socket, tuple[str, int]]:
            sock, addr = orig(self)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock, addr

        transport.AssociationServer.get_request = get_request  # type: ignore[method-assign]

    ae = AE(ae_title=args.aet)
    ae.maximum_associations = args.max_associations
    ae.add_supported_context(Verification)
    print(f"pynetdicom SCP on {args.host}:{args.port} nodelay={args.nodelay}", flush=True)
    ae.start_server((args.host, args.port), block=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
