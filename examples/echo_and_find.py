"""Scenario 1: verify a PACS with C-ECHO, then query it with C-FIND.

    python examples/echo_and_find.py HOST PORT [CALLED_AE] [PATIENT_NAME]

Lists the studies of patients matching PATIENT_NAME (wildcards allowed).
"""

from __future__ import annotations

import asyncio
import sys

from pydicom.dataset import Dataset

import aiodicom

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


async def main(
    host: str = "127.0.0.1", port: int = 11112, called_ae: str = "ANY-SCP", patient_name: str = "*"
) -> list[Dataset]:
    """Echo, then list the matching studies; returns the identifiers."""
    async with aiodicom.associate(
        host, port, called_ae=called_ae, contexts=[VERIFICATION, STUDY_ROOT_FIND]
    ) as assoc:
        status = await assoc.echo()
        print(f"C-ECHO {called_ae}@{host}:{port}: 0x{status:04X}")

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientName = patient_name
        query.PatientID = ""
        query.StudyInstanceUID = ""
        query.StudyDate = ""
        query.StudyDescription = ""

        found: list[Dataset] = []
        # ``async with`` makes an early exit (break, exception, cancellation)
        # send C-CANCEL and wait until the operation is settled.
        async with assoc.find(query, model="study") as results:
            async for status, identifier in results:
                if identifier is not None:
                    found.append(identifier)
                    print(f"  {identifier.PatientName}  {identifier.StudyDate}  {identifier.StudyInstanceUID}")
            print(f"C-FIND: {len(found)} match(es), final status {results.final_status!r}")
        return found


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            args[0] if len(args) > 0 else "127.0.0.1",
            int(args[1]) if len(args) > 1 else 11112,
            args[2] if len(args) > 2 else "ANY-SCP",
            args[3] if len(args) > 3 else "*",
        )
    )
