"""aiodicom: pure-asyncio DICOM networking.

Quick start::

    import aiodicom

    async with aiodicom.associate("127.0.0.1", 11112, called_ae="ARCHIVE") as assoc:
        status = await assoc.echo()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names below are imported on first use (PEP 562)
    from .aio.association import Association
    from .aio.client import associate, build_contexts
    from .aio.errors import (
        AssociationAborted,
        AssociationRejectedError,
        DICOMError,
        DIMSETimeout,
        NoAcceptedContext,
    )
    from .aio.pool import Pool, PoolClosed
    from .aio.server import DEFAULT_TRANSFER_SYNTAXES, Server
    from . import events
    from .events import TRACE
    from .dimse.status import Status
    from .services.find import FindRequest, FindResults, serve_find
    from .services.move import MoveInstance, MoveRequest, MoveResult, serve_move
    from .services.get import GetRequest, GetResult, ReceivedInstance, get_contexts, retrieve_series, serve_get
    from .services.rpq import (
        TEMPLATE_NOT_SUPPORTED,
        RelevantPatientInfoError,
        RelevantPatientRequest,
        TemplateNotSupported,
        build_relevant_patient_info,
        serve_relevant_patient_info,
    )
    from .services.store import ServiceError, StoreRequest, serve_store, store_to_directory

_LAZY: dict[str, str] = {
    "Association": ".aio.association",
    "associate": ".aio.client",
    "build_contexts": ".aio.client",
    "AssociationAborted": ".aio.errors",
    "AssociationRejectedError": ".aio.errors",
    "DICOMError": ".aio.errors",
    "DIMSETimeout": ".aio.errors",
    "NoAcceptedContext": ".aio.errors",
    "Pool": ".aio.pool",
    "PoolClosed": ".aio.pool",
    "DEFAULT_TRANSFER_SYNTAXES": ".aio.server",
    "Server": ".aio.server",
    "events": ".events",
    "TRACE": ".events",
    "Status": ".dimse.status",
    "FindRequest": ".services.find",
    "FindResults": ".services.find",
    "serve_find": ".services.find",
    "MoveInstance": ".services.move",
    "MoveRequest": ".services.move",
    "MoveResult": ".services.move",
    "serve_move": ".services.move",
    "GetRequest": ".services.get",
    "GetResult": ".services.get",
    "ReceivedInstance": ".services.get",
    "get_contexts": ".services.get",
    "retrieve_series": ".services.get",
    "serve_get": ".services.get",
    "TEMPLATE_NOT_SUPPORTED": ".services.rpq",
    "RelevantPatientInfoError": ".services.rpq",
    "RelevantPatientRequest": ".services.rpq",
    "TemplateNotSupported": ".services.rpq",
    "build_relevant_patient_info": ".services.rpq",
    "serve_relevant_patient_info": ".services.rpq",
    "ServiceError": ".services.store",
    "StoreRequest": ".services.store",
    "serve_store": ".services.store",
    "store_to_directory": ".services.store",
}


def __getattr__(name: str) -> object:
    """Import public names on first use, so ``import aiodicom`` (and the CLI) start fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiodicom' has no attribute {name!r}")
    from importlib import import_module

    if module == "." + name:
        value: object = import_module(module, __name__)
    else:
        value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Association",
    "AssociationAborted",
    "AssociationRejectedError",
    "DEFAULT_TRANSFER_SYNTAXES",
    "DICOMError",
    "DIMSETimeout",
    "FindRequest",
    "FindResults",
    "GetRequest",
    "GetResult",
    "MoveInstance",
    "MoveRequest",
    "MoveResult",
    "NoAcceptedContext",
    "Pool",
    "PoolClosed",
    "ReceivedInstance",
    "RelevantPatientInfoError",
    "RelevantPatientRequest",
    "Server",
    "ServiceError",
    "Status",
    "StoreRequest",
    "TEMPLATE_NOT_SUPPORTED",
    "TRACE",
    "TemplateNotSupported",
    "associate",
    "build_contexts",
    "build_relevant_patient_info",
    "events",
    "get_contexts",
    "retrieve_series",
    "serve_find",
    "serve_get",
    "serve_move",
    "serve_relevant_patient_info",
    "serve_store",
    "store_to_directory",
    "__version__",
]
