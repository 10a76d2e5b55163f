"""Protocol errors raised by the sans-I/O core.

Only :class:`ProtocolError` (and its subclasses) may escape the receive path
of the core.  Each carries the A-ABORT source and reason (PS3.8 9.3.8,
Table 9-26) that the association must send when the error is fatal.
"""

from __future__ import annotations

__all__ = [
    "ABORT_SOURCE_USER",
    "ABORT_SOURCE_PROVIDER",
    "REASON_NOT_SPECIFIED",
    "REASON_UNRECOGNIZED_PDU",
    "REASON_UNEXPECTED_PDU",
    "REASON_UNRECOGNIZED_PDU_PARAMETER",
    "REASON_UNEXPECTED_PDU_PARAMETER",
    "REASON_INVALID_PDU_PARAMETER_VALUE",
    "ProtocolError",
]

# A-ABORT source (PS3.8 Table 9-26)
ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2

# A-ABORT reason/diag, meaningful only when the source is the provider.
REASON_NOT_SPECIFIED = 0
REASON_UNRECOGNIZED_PDU = 1
REASON_UNEXPECTED_PDU = 2
REASON_UNRECOGNIZED_PDU_PARAMETER = 4
REASON_UNEXPECTED_PDU_PARAMETER = 5
REASON_INVALID_PDU_PARAMETER_VALUE = 6


class ProtocolError(Exception):
    """The peer broke the protocol; the association must be aborted.

    ``source`` and ``reason`` are the values to put in the A-ABORT PDU.
    """

    def __init__(
        self,
        message: str,
        *,
        source: int = ABORT_SOURCE_PROVIDER,
        reason: int = REASON_INVALID_PDU_PARAMETER_VALUE,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason
