"""Association-cycle benchmarks for aiodicom (``python -m benchmarks``).

One *cycle* is a complete association on a fresh TCP connection:
A-ASSOCIATE-RQ/AC, one C-ECHO-RQ/RSP, A-RELEASE-RQ/RP and the close.

Every benchmark measures one side (the SCP or the SCU) while the other side
is a fixed peer running in a separate process.  See ``benchmarks/README.md``.

Modules:

* :mod:`benchmarks.runner` -- orchestration, table, JSON (the command line).
* :mod:`benchmarks.common` -- the timed window shared by all load generators.
* :mod:`benchmarks.aio_client` -- aiodicom SCU load generator (asyncio/uvloop).
* :mod:`benchmarks.pynd_client` -- pynetdicom SCU load generator (threads).
* :mod:`benchmarks.pynd_server` -- pynetdicom Verification SCP.
* :mod:`benchmarks.echoscu_client` -- DCMTK ``echoscu`` driver (one process per cycle).
* :mod:`benchmarks.procs` -- starting, waiting for and killing peer processes.
* :mod:`benchmarks.inproc` -- aiodicom's Python cost per cycle over in-memory transports.
* :mod:`benchmarks.profile_cycles` -- cProfile one side against a peer process.
"""
