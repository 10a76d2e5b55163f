"""Scenario 2: C-GET one CT series into a folder.

    python examples/retrieve_series.py HOST PORT CALLED_AE PATIENT_ID STUDY_UID SERIES_UID OUT_DIR

C-GET needs no listening port on our side: the PACS sends the instances as
C-STORE sub-operations on our association; we propose CT Image Storage with
the SCP role (``aiodicom.get_contexts``) and write each instance as a Part 10
file named after its SOP Instance UID.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pydicom.dataset import Dataset

import aiodicom
from aiodicom.services.get import GetProgress, ReceivedInstance

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


async def main(
    host: str,
    port: int,
    called_ae: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    out_dir: str | Path,
) -> aiodicom.GetResult:
    """Retrieve the series; returns the final :class:`aiodicom.GetResult`."""
    contexts, roles = aiodicom.get_contexts([CT_IMAGE_STORAGE], models=["patient"])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.PatientID = patient_id
    identifier.StudyInstanceUID = study_uid
    identifier.SeriesInstanceUID = series_uid

    async with aiodicom.associate(host, port, called_ae=called_ae, contexts=contexts, roles=roles) as assoc:
        async with assoc.get(identifier, "patient", write_to=out_dir) as op:
            async for item in op:
                if isinstance(item, ReceivedInstance):
                    print(f"  received {item.sop_instance_uid} -> {item.path}")
                elif isinstance(item, GetProgress):
                    print(f"  progress: {item.completed} done, {item.remaining} remaining")
        result = op.result
    assert result is not None
    print(f"C-GET: {result.status!r}, {result.completed} completed, {result.failed} failed")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    h, p, ae, pid, st, se, out = sys.argv[1:]
    r = asyncio.run(main(h, int(p), ae, pid, st, se, out))
    sys.exit(0 if r.ok else 1)
