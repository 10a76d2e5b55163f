"""Exceptions raised by associations and services."""

from __future__ import annotations

from ..ul import pdu as P

__all__ = ["DICOMError", "AssociationRejectedError", "AssociationAborted", "DIMSETimeout", "NoAcceptedContext"]


class DICOMError(Exception):
    """Base class of aiodicom's runtime errors."""


class AssociationRejectedError(DICOMError):
    """The peer rejected the association; ``reject`` is its A-ASSOCIATE-RJ."""

    def __init__(self, reject: P.AAssociateRJ) -> None:
        super().__init__(f"association rejected ({reject.describe()})")
        self.reject = reject

    @property
    def result(self) -> int:
        """1 permanent, 2 transient."""
        return self.reject.result

    @property
    def source(self) -> int:
        """1 service user, 2 ACSE, 3 presentation."""
        return self.reject.source

    @property
    def reason(self) -> int:
        """Reason/diagnostic code (PS3.8 Table 9-21)."""
        return self.reject.reason


class AssociationAborted(DICOMError, ConnectionError):
    """The association was aborted or the connection lost."""

    def __init__(self, message: str, source: int | None = None, reason: int | None = None, by_peer: bool = False):
        super().__init__(message)
        self.source = source
        self.reason = reason
        self.by_peer = by_peer


class DIMSETimeout(DICOMError, TimeoutError):
    """No DIMSE response arrived within the DIMSE timeout."""


class NoAcceptedContext(DICOMError):
    """No accepted presentation context fits the requested operation."""
