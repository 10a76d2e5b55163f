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
from .aio.server import DEFAULT_TRANSFER_SYNTAXES, Server
from .dimse.status import Status

__version__ = "0.1.0"

__all__ = [
    "Association",
    "AssociationAborted",
    "AssociationRejectedError",
    "DEFAULT_TRANSFER_SYNTAXES",
    "DICOMError",
    "DIMSETimeout",
    "NoAcceptedContext",
    "Server",
    "Status",
    "associate",
    "build_contexts",
    "__version__",
]
