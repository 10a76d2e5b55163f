"""aiodicom: pure-asyncio DICOM networking.

Quick start::

    import aiodicom

    async with aiodicom.associate("127.0.0.1", 11112, called_ae="ARCHIVE") as assoc:
        status = await assoc.echo()
"""

from __future__ import annotations

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
