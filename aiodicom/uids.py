"""Well-known DICOM UIDs used by aiodicom, and UID syntax validation.

All constants are plain :class:`str` values so that this module has no
import-time dependency on pydicom.  Names follow the pydicom UID keywords
(PS3.6 Annex A), e.g. :data:`ImplicitVRLittleEndian`.

The Storage SOP Class table was generated once from pydicom 3's UID
dictionary (non-retired ``SOP Class`` entries whose name ends with
``Storage`` or ``Storage - For Presentation/Processing``) and is kept here as
a literal.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "DICOMApplicationContext",
    "APPLICATION_CONTEXT_NAME",
    "Verification",
    "VERIFICATION_SOP_CLASS",
    # transfer syntaxes
    "ImplicitVRLittleEndian",
    "ExplicitVRLittleEndian",
    "EncapsulatedUncompressedExplicitVRLittleEndian",
    "DeflatedExplicitVRLittleEndian",
    "ExplicitVRBigEndian",
    "JPEGBaseline8Bit",
    "JPEGExtended12Bit",
    "JPEGLossless",
    "JPEGLosslessSV1",
    "JPEGLSLossless",
    "JPEGLSNearLossless",
    "JPEG2000Lossless",
    "JPEG2000",
    "JPEG2000MCLossless",
    "JPEG2000MC",
    "JPIPReferenced",
    "JPIPReferencedDeflate",
    "MPEG2MPML",
    "MPEG2MPMLF",
    "MPEG2MPHL",
    "MPEG2MPHLF",
    "MPEG4HP41",
    "MPEG4HP41F",
    "MPEG4HP41BD",
    "MPEG4HP41BDF",
    "MPEG4HP422D",
    "MPEG4HP422DF",
    "MPEG4HP423D",
    "MPEG4HP423DF",
    "MPEG4HP42STEREO",
    "MPEG4HP42STEREOF",
    "HEVCMP51",
    "HEVCM10P51",
    "HTJ2KLossless",
    "HTJ2KLosslessRPCL",
    "HTJ2K",
    "JPIPHTJ2KReferenced",
    "JPIPHTJ2KReferencedDeflate",
    "RLELossless",
    "NATIVE_TRANSFER_SYNTAXES",
    "COMPRESSED_TRANSFER_SYNTAXES",
    "JPIP_TRANSFER_SYNTAXES",
    "DEFLATED_TRANSFER_SYNTAXES",
    "ALL_TRANSFER_SYNTAXES",
    "TRANSFER_SYNTAX_NAMES",
    # query/retrieve
    "PatientRootQueryRetrieveInformationModelFind",
    "PatientRootQueryRetrieveInformationModelMove",
    "PatientRootQueryRetrieveInformationModelGet",
    "StudyRootQueryRetrieveInformationModelFind",
    "StudyRootQueryRetrieveInformationModelMove",
    "StudyRootQueryRetrieveInformationModelGet",
    "PatientStudyOnlyQueryRetrieveInformationModelFind",
    "PatientStudyOnlyQueryRetrieveInformationModelMove",
    "PatientStudyOnlyQueryRetrieveInformationModelGet",
    "CompositeInstanceRootRetrieveMove",
    "CompositeInstanceRootRetrieveGet",
    "CompositeInstanceRetrieveWithoutBulkDataGet",
    "ModalityWorklistInformationModelFind",
    "GeneralRelevantPatientInformationQuery",
    "BreastImagingRelevantPatientInformationQuery",
    "CardiacRelevantPatientInformationQuery",
    "QR_FIND_SOP_CLASSES",
    "QR_MOVE_SOP_CLASSES",
    "QR_GET_SOP_CLASSES",
    "RELEVANT_PATIENT_INFORMATION_QUERY_SOP_CLASSES",
    # storage
    "STORAGE_SOP_CLASSES",
    "RETIRED_STORAGE_SOP_CLASSES",
    # implementation
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "uid_is_valid",
]

# ---------------------------------------------------------------------------
# Application context and Verification
# ---------------------------------------------------------------------------

#: DICOM Application Context Name (PS3.7 Annex A.2.1).
DICOMApplicationContext: Final = "1.2.840.10008.3.1.1.1"
#: Alias of :data:`DICOMApplicationContext`.
APPLICATION_CONTEXT_NAME: Final = DICOMApplicationContext

#: Verification SOP Class (C-ECHO).
Verification: Final = "1.2.840.10008.1.1"
#: Alias of :data:`Verification`.
VERIFICATION_SOP_CLASS: Final = Verification

# ---------------------------------------------------------------------------
# Transfer syntaxes (PS3.5 Section 10 / Annex A, PS3.6 Annex A)
# ---------------------------------------------------------------------------

ImplicitVRLittleEndian: Final = "1.2.840.10008.1.2"
ExplicitVRLittleEndian: Final = "1.2.840.10008.1.2.1"
EncapsulatedUncompressedExplicitVRLittleEndian: Final = "1.2.840.10008.1.2.1.98"
DeflatedExplicitVRLittleEndian: Final = "1.2.840.10008.1.2.1.99"
#: Retired in the standard, still found in the wild.
ExplicitVRBigEndian: Final = "1.2.840.10008.1.2.2"

JPEGBaseline8Bit: Final = "1.2.840.10008.1.2.4.50"
JPEGExtended12Bit: Final = "1.2.840.10008.1.2.4.51"
JPEGLossless: Final = "1.2.840.10008.1.2.4.57"
JPEGLosslessSV1: Final = "1.2.840.10008.1.2.4.70"
JPEGLSLossless: Final = "1.2.840.10008.1.2.4.80"
JPEGLSNearLossless: Final = "1.2.840.10008.1.2.4.81"
JPEG2000Lossless: Final = "1.2.840.10008.1.2.4.90"
JPEG2000: Final = "1.2.840.10008.1.2.4.91"
JPEG2000MCLossless: Final = "1.2.840.10008.1.2.4.92"
JPEG2000MC: Final = "1.2.840.10008.1.2.4.93"
JPIPReferenced: Final = "1.2.840.10008.1.2.4.94"
#: The data set itself is deflated (PS3.5 A.6).
JPIPReferencedDeflate: Final = "1.2.840.10008.1.2.4.95"
MPEG2MPML: Final = "1.2.840.10008.1.2.4.100"
MPEG2MPMLF: Final = "1.2.840.10008.1.2.4.100.1"
MPEG2MPHL: Final = "1.2.840.10008.1.2.4.101"
MPEG2MPHLF: Final = "1.2.840.10008.1.2.4.101.1"
MPEG4HP41: Final = "1.2.840.10008.1.2.4.102"
MPEG4HP41F: Final = "1.2.840.10008.1.2.4.102.1"
MPEG4HP41BD: Final = "1.2.840.10008.1.2.4.103"
MPEG4HP41BDF: Final = "1.2.840.10008.1.2.4.103.1"
MPEG4HP422D: Final = "1.2.840.10008.1.2.4.104"
MPEG4HP422DF: Final = "1.2.840.10008.1.2.4.104.1"
MPEG4HP423D: Final = "1.2.840.10008.1.2.4.105"
MPEG4HP423DF: Final = "1.2.840.10008.1.2.4.105.1"
MPEG4HP42STEREO: Final = "1.2.840.10008.1.2.4.106"
MPEG4HP42STEREOF: Final = "1.2.840.10008.1.2.4.106.1"
HEVCMP51: Final = "1.2.840.10008.1.2.4.107"
HEVCM10P51: Final = "1.2.840.10008.1.2.4.108"
HTJ2KLossless: Final = "1.2.840.10008.1.2.4.201"
HTJ2KLosslessRPCL: Final = "1.2.840.10008.1.2.4.202"
HTJ2K: Final = "1.2.840.10008.1.2.4.203"
JPIPHTJ2KReferenced: Final = "1.2.840.10008.1.2.4.204"
#: The data set itself is deflated (PS3.5 A.12).
JPIPHTJ2KReferencedDeflate: Final = "1.2.840.10008.1.2.4.205"
RLELossless: Final = "1.2.840.10008.1.2.5"

#: The uncompressed ("native") transfer syntaxes, in the order an SCU should
#: usually propose them.
NATIVE_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

#: Transfer syntaxes with encapsulated (compressed or fragmented) Pixel Data.
#: The data set is Explicit VR Little Endian; only the Pixel Data differs.
COMPRESSED_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    JPEG2000MCLossless,
    JPEG2000MC,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
    EncapsulatedUncompressedExplicitVRLittleEndian,
    MPEG2MPML,
    MPEG2MPMLF,
    MPEG2MPHL,
    MPEG2MPHLF,
    MPEG4HP41,
    MPEG4HP41F,
    MPEG4HP41BD,
    MPEG4HP41BDF,
    MPEG4HP422D,
    MPEG4HP422DF,
    MPEG4HP423D,
    MPEG4HP423DF,
    MPEG4HP42STEREO,
    MPEG4HP42STEREOF,
    HEVCMP51,
    HEVCM10P51,
)

#: JPIP referenced transfer syntaxes: the Pixel Data is replaced by a Pixel
#: Data Provider URL.
JPIP_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    JPIPReferenced,
    JPIPReferencedDeflate,
    JPIPHTJ2KReferenced,
    JPIPHTJ2KReferencedDeflate,
)

#: Transfer syntaxes whose whole encoded data set is compressed with raw
#: deflate (RFC 1951), PS3.5 A.5, A.6 and A.12.
DEFLATED_TRANSFER_SYNTAXES: Final[frozenset[str]] = frozenset(
    {
        DeflatedExplicitVRLittleEndian,
        JPIPReferencedDeflate,
        JPIPHTJ2KReferencedDeflate,
    }
)

#: Every transfer syntax known to aiodicom.
ALL_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    NATIVE_TRANSFER_SYNTAXES + COMPRESSED_TRANSFER_SYNTAXES + JPIP_TRANSFER_SYNTAXES
)

#: Human-readable names of :data:`ALL_TRANSFER_SYNTAXES` (for logs).
TRANSFER_SYNTAX_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        ImplicitVRLittleEndian: "Implicit VR Little Endian",
        ExplicitVRLittleEndian: "Explicit VR Little Endian",
        EncapsulatedUncompressedExplicitVRLittleEndian: (
            "Encapsulated Uncompressed Explicit VR Little Endian"
        ),
        DeflatedExplicitVRLittleEndian: "Deflated Explicit VR Little Endian",
        ExplicitVRBigEndian: "Explicit VR Big Endian",
        JPEGBaseline8Bit: "JPEG Baseline (Process 1)",
        JPEGExtended12Bit: "JPEG Extended (Process 2 and 4)",
        JPEGLossless: "JPEG Lossless, Non-Hierarchical (Process 14)",
        JPEGLosslessSV1: "JPEG Lossless, Non-Hierarchical, First-Order Prediction",
        JPEGLSLossless: "JPEG-LS Lossless Image Compression",
        JPEGLSNearLossless: "JPEG-LS Lossy (Near-Lossless) Image Compression",
        JPEG2000Lossless: "JPEG 2000 Image Compression (Lossless Only)",
        JPEG2000: "JPEG 2000 Image Compression",
        JPEG2000MCLossless: (
            "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)"
        ),
        JPEG2000MC: "JPEG 2000 Part 2 Multi-component Image Compression",
        JPIPReferenced: "JPIP Referenced",
        JPIPReferencedDeflate: "JPIP Referenced Deflate",
        MPEG2MPML: "MPEG2 Main Profile / Main Level",
        MPEG2MPMLF: "Fragmentable MPEG2 Main Profile / Main Level",
        MPEG2MPHL: "MPEG2 Main Profile / High Level",
        MPEG2MPHLF: "Fragmentable MPEG2 Main Profile / High Level",
        MPEG4HP41: "MPEG-4 AVC/H.264 High Profile / Level 4.1",
        MPEG4HP41F: "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1",
        MPEG4HP41BD: "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        MPEG4HP41BDF: (
            "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1"
        ),
        MPEG4HP422D: "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        MPEG4HP422DF: (
            "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video"
        ),
        MPEG4HP423D: "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
        MPEG4HP423DF: (
            "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video"
        ),
        MPEG4HP42STEREO: "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
        MPEG4HP42STEREOF: (
            "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2"
        ),
        HEVCMP51: "HEVC/H.265 Main Profile / Level 5.1",
        HEVCM10P51: "HEVC/H.265 Main 10 Profile / Level 5.1",
        HTJ2KLossless: "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
        HTJ2KLosslessRPCL: (
            "High-Throughput JPEG 2000 with RPCL Options Image Compression "
            "(Lossless Only)"
        ),
        HTJ2K: "High-Throughput JPEG 2000 Image Compression",
        JPIPHTJ2KReferenced: "JPIP HTJ2K Referenced",
        JPIPHTJ2KReferencedDeflate: "JPIP HTJ2K Referenced Deflate",
        RLELossless: "RLE Lossless",
    }
)

# ---------------------------------------------------------------------------
# Query/Retrieve (PS3.4 Annex C), Worklist (Annex K), Relevant Patient
# Information Query (Annex Q)
# ---------------------------------------------------------------------------

PatientRootQueryRetrieveInformationModelFind: Final = "1.2.840.10008.5.1.4.1.2.1.1"
PatientRootQueryRetrieveInformationModelMove: Final = "1.2.840.10008.5.1.4.1.2.1.2"
PatientRootQueryRetrieveInformationModelGet: Final = "1.2.840.10008.5.1.4.1.2.1.3"
StudyRootQueryRetrieveInformationModelFind: Final = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelMove: Final = "1.2.840.10008.5.1.4.1.2.2.2"
StudyRootQueryRetrieveInformationModelGet: Final = "1.2.840.10008.5.1.4.1.2.2.3"
#: Patient/Study Only Q/R classes are retired but still encountered.
PatientStudyOnlyQueryRetrieveInformationModelFind: Final = (
    "1.2.840.10008.5.1.4.1.2.3.1"
)
PatientStudyOnlyQueryRetrieveInformationModelMove: Final = (
    "1.2.840.10008.5.1.4.1.2.3.2"
)
PatientStudyOnlyQueryRetrieveInformationModelGet: Final = (
    "1.2.840.10008.5.1.4.1.2.3.3"
)
CompositeInstanceRootRetrieveMove: Final = "1.2.840.10008.5.1.4.1.2.4.2"
CompositeInstanceRootRetrieveGet: Final = "1.2.840.10008.5.1.4.1.2.4.3"
CompositeInstanceRetrieveWithoutBulkDataGet: Final = "1.2.840.10008.5.1.4.1.2.5.3"
ModalityWorklistInformationModelFind: Final = "1.2.840.10008.5.1.4.31"
GeneralRelevantPatientInformationQuery: Final = "1.2.840.10008.5.1.4.37.1"
BreastImagingRelevantPatientInformationQuery: Final = "1.2.840.10008.5.1.4.37.2"
CardiacRelevantPatientInformationQuery: Final = "1.2.840.10008.5.1.4.37.3"

#: Q/R information models used with C-FIND.
QR_FIND_SOP_CLASSES: Final[tuple[str, ...]] = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
)
#: Q/R information models used with C-MOVE.
QR_MOVE_SOP_CLASSES: Final[tuple[str, ...]] = (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientStudyOnlyQueryRetrieveInformationModelMove,
    CompositeInstanceRootRetrieveMove,
)
#: Q/R information models used with C-GET.
QR_GET_SOP_CLASSES: Final[tuple[str, ...]] = (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    PatientStudyOnlyQueryRetrieveInformationModelGet,
    CompositeInstanceRootRetrieveGet,
    CompositeInstanceRetrieveWithoutBulkDataGet,
)
#: Relevant Patient Information Query SOP classes (C-FIND based).
RELEVANT_PATIENT_INFORMATION_QUERY_SOP_CLASSES: Final[tuple[str, ...]] = (
    GeneralRelevantPatientInformationQuery,
    BreastImagingRelevantPatientInformationQuery,
    CardiacRelevantPatientInformationQuery,
)

# ---------------------------------------------------------------------------
# Storage SOP Classes (PS3.4 Annex B) - generated table, UID -> name
# ---------------------------------------------------------------------------

#: Every non-retired standard Storage SOP Class, UID -> name.
STORAGE_SOP_CLASSES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "1.2.840.10008.1.3.10": "Media Storage Directory Storage",
        "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
        "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.1.3": "Digital Intra-Oral X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.3.1": "Digital Intra-Oral X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
        "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.4.2": "MR Spectroscopy Storage",
        "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
        "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
        "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume Storage",
        "1.2.840.10008.5.1.4.1.1.6.3": "Photoacoustic Image Storage",
        "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.1.4": "General 32-bit ECG Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.2.1": "Hemodynamic Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.3.1": "Cardiac Electrophysiology Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.4.1": "Basic Voice Audio Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.4.2": "General Audio Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.5.1": "Arterial Pulse Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.6.1": "Respiratory Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.6.2": "Multi-channel Respiratory Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.7.1": "Routine Scalp Electroencephalogram Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.7.2": "Electromyogram Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.7.3": "Electrooculogram Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.7.4": "Sleep Electroencephalogram Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.8.1": "Body Position Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.2": "Color Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.3": "Pseudo-Color Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.4": "Blending Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.5": "XA/XRF Grayscale Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.6": "Grayscale Planar MPR Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.7": "Compositing Planar MPR Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.8": "Advanced Blending Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.9": "Volume Rendering Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.10": "Segmented Volume Rendering Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.11": "Multiple Volume Rendering Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.12": "Variable Modality LUT Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.12.1.1": "Enhanced XA Image Storage",
        "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.12.2.1": "Enhanced XRF Image Storage",
        "1.2.840.10008.5.1.4.1.1.13.1.1": "X-Ray 3D Angiographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.13.1.2": "X-Ray 3D Craniofacial Image Storage",
        "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
        "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.14.1": "Intravascular Optical Coherence Tomography Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.14.2": "Intravascular Optical Coherence Tomography Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
        "1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
        "1.2.840.10008.5.1.4.1.1.66": "Raw Data Storage",
        "1.2.840.10008.5.1.4.1.1.66.1": "Spatial Registration Storage",
        "1.2.840.10008.5.1.4.1.1.66.2": "Spatial Fiducials Storage",
        "1.2.840.10008.5.1.4.1.1.66.3": "Deformable Spatial Registration Storage",
        "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
        "1.2.840.10008.5.1.4.1.1.66.5": "Surface Segmentation Storage",
        "1.2.840.10008.5.1.4.1.1.66.6": "Tractography Results Storage",
        "1.2.840.10008.5.1.4.1.1.67": "Real World Value Mapping Storage",
        "1.2.840.10008.5.1.4.1.1.68.1": "Surface Scan Mesh Storage",
        "1.2.840.10008.5.1.4.1.1.68.2": "Surface Scan Point Cloud Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.1": "VL Endoscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.2": "VL Microscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.2.1": "Video Microscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.3": "VL Slide-Coordinates Microscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.4.1": "Video Photographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.2": "Ophthalmic Photography 16 Bit Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.3": "Stereometric Relationship Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.4": "Ophthalmic Tomography Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.5": "Wide Field Ophthalmic Photography Stereographic Projection Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.6": "Wide Field Ophthalmic Photography 3D Coordinates Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.7": "Ophthalmic Optical Coherence Tomography En Face Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.8": "Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.6": "VL Whole Slide Microscopy Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.8": "Confocal Microscopy Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.9": "Confocal Microscopy Tiled Pyramidal Image Storage",
        "1.2.840.10008.5.1.4.1.1.78.1": "Lensometry Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.2": "Autorefraction Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.3": "Keratometry Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.4": "Subjective Refraction Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.5": "Visual Acuity Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.6": "Spectacle Prescription Report Storage",
        "1.2.840.10008.5.1.4.1.1.78.7": "Ophthalmic Axial Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.8": "Intraocular Lens Calculations Storage",
        "1.2.840.10008.5.1.4.1.1.79.1": "Macular Grid Thickness and Volume Report Storage",
        "1.2.840.10008.5.1.4.1.1.80.1": "Ophthalmic Visual Field Static Perimetry Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.81.1": "Ophthalmic Thickness Map Storage",
        "1.2.840.10008.5.1.4.1.1.82.1": "Corneal Topography Map Storage",
        "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.40": "Procedure Log Storage",
        "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
        "1.2.840.10008.5.1.4.1.1.88.65": "Chest CAD SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.69": "Colon CAD SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.70": "Implantation Plan SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.71": "Acquisition Context SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.72": "Simplified Adult Echo SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.73": "Patient Radiation Dose SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.74": "Planned Imaging Agent Administration SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.75": "Performed Imaging Agent Administration SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.76": "Enhanced X-Ray Radiation Dose SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.77": "Waveform Annotation SR Storage",
        "1.2.840.10008.5.1.4.1.1.90.1": "Content Assessment Results Storage",
        "1.2.840.10008.5.1.4.1.1.91.1": "Microscopy Bulk Simple Annotations Storage",
        "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
        "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA Storage",
        "1.2.840.10008.5.1.4.1.1.104.3": "Encapsulated STL Storage",
        "1.2.840.10008.5.1.4.1.1.104.4": "Encapsulated OBJ Storage",
        "1.2.840.10008.5.1.4.1.1.104.5": "Encapsulated MTL Storage",
        "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
        "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
        "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
        "1.2.840.10008.5.1.4.1.1.131": "Basic Structured Display Storage",
        "1.2.840.10008.5.1.4.1.1.200.1": "CT Defined Procedure Protocol Storage",
        "1.2.840.10008.5.1.4.1.1.200.2": "CT Performed Procedure Protocol Storage",
        "1.2.840.10008.5.1.4.1.1.200.3": "Protocol Approval Storage",
        "1.2.840.10008.5.1.4.1.1.200.7": "XA Defined Procedure Protocol Storage",
        "1.2.840.10008.5.1.4.1.1.200.8": "XA Performed Procedure Protocol Storage",
        "1.2.840.10008.5.1.4.1.1.201.1": "Inventory Storage",
        "1.2.840.10008.5.1.4.1.1.481.1": "RT Image Storage",
        "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
        "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
        "1.2.840.10008.5.1.4.1.1.481.4": "RT Beams Treatment Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
        "1.2.840.10008.5.1.4.1.1.481.6": "RT Brachy Treatment Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.7": "RT Treatment Summary Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.8": "RT Ion Plan Storage",
        "1.2.840.10008.5.1.4.1.1.481.9": "RT Ion Beams Treatment Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.10": "RT Physician Intent Storage",
        "1.2.840.10008.5.1.4.1.1.481.11": "RT Segment Annotation Storage",
        "1.2.840.10008.5.1.4.1.1.481.12": "RT Radiation Set Storage",
        "1.2.840.10008.5.1.4.1.1.481.13": "C-Arm Photon-Electron Radiation Storage",
        "1.2.840.10008.5.1.4.1.1.481.14": "Tomotherapeutic Radiation Storage",
        "1.2.840.10008.5.1.4.1.1.481.15": "Robotic-Arm Radiation Storage",
        "1.2.840.10008.5.1.4.1.1.481.16": "RT Radiation Record Set Storage",
        "1.2.840.10008.5.1.4.1.1.481.17": "RT Radiation Salvage Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.18": "Tomotherapeutic Radiation Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.19": "C-Arm Photon-Electron Radiation Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.20": "Robotic Radiation Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.21": "RT Radiation Set Delivery Instruction Storage",
        "1.2.840.10008.5.1.4.1.1.481.22": "RT Treatment Preparation Storage",
        "1.2.840.10008.5.1.4.1.1.481.23": "Enhanced RT Image Storage",
        "1.2.840.10008.5.1.4.1.1.481.24": "Enhanced Continuous RT Image Storage",
        "1.2.840.10008.5.1.4.1.1.481.25": "RT Patient Position Acquisition Instruction Storage",
        "1.2.840.10008.5.1.4.1.1.501.1": "DICOS CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.501.2.1": "DICOS Digital X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.501.2.2": "DICOS Digital X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.501.3": "DICOS Threat Detection Report Storage",
        "1.2.840.10008.5.1.4.1.1.501.4": "DICOS 2D AIT Storage",
        "1.2.840.10008.5.1.4.1.1.501.5": "DICOS 3D AIT Storage",
        "1.2.840.10008.5.1.4.1.1.501.6": "DICOS Quadrupole Resonance (QR) Storage",
        "1.2.840.10008.5.1.4.1.1.601.1": "Eddy Current Image Storage",
        "1.2.840.10008.5.1.4.1.1.601.2": "Eddy Current Multi-frame Image Storage",
        "1.2.840.10008.5.1.4.34.7": "RT Beams Delivery Instruction Storage",
        "1.2.840.10008.5.1.4.34.10": "RT Brachy Application Setup Delivery Instruction Storage",
        "1.2.840.10008.5.1.4.38.1": "Hanging Protocol Storage",
        "1.2.840.10008.5.1.4.39.1": "Color Palette Storage",
        "1.2.840.10008.5.1.4.43.1": "Generic Implant Template Storage",
        "1.2.840.10008.5.1.4.44.1": "Implant Assembly Template Storage",
        "1.2.840.10008.5.1.4.45.1": "Implant Template Group Storage",
    }
)

#: Retired (and trial) Storage SOP Classes, UID -> name.  Not part of
#: :data:`STORAGE_SOP_CLASSES`; an SCP that must accept legacy modalities can
#: add them explicitly.
RETIRED_STORAGE_SOP_CLASSES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage",
        "1.2.840.10008.5.1.4.1.1.5": "Nuclear Medicine Image Storage",
        "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage",
        "1.2.840.10008.5.1.4.1.1.8": "Standalone Overlay Storage",
        "1.2.840.10008.5.1.4.1.1.9": "Standalone Curve Storage",
        "1.2.840.10008.5.1.4.1.1.9.1": "Waveform Storage - Trial",
        "1.2.840.10008.5.1.4.1.1.10": "Standalone Modality LUT Storage",
        "1.2.840.10008.5.1.4.1.1.11": "Standalone VOI LUT Storage",
        "1.2.840.10008.5.1.4.1.1.12.3": "X-Ray Angiographic Bi-Plane Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1": "VL Image Storage - Trial",
        "1.2.840.10008.5.1.4.1.1.77.2": "VL Multi-frame Image Storage - Trial",
        "1.2.840.10008.5.1.4.1.1.88.1": "Text SR Storage - Trial",
        "1.2.840.10008.5.1.4.1.1.88.2": "Audio SR Storage - Trial",
        "1.2.840.10008.5.1.4.1.1.88.3": "Detail SR Storage - Trial",
        "1.2.840.10008.5.1.4.1.1.88.4": "Comprehensive SR Storage - Trial",
        "1.2.840.10008.5.1.4.1.1.129": "Standalone PET Curve Storage",
        "1.2.840.10008.5.1.4.34.1": "RT Beams Delivery Instruction Storage - Trial",
    }
)

# ---------------------------------------------------------------------------
# Implementation identification (PS3.7 D.3.3.2)
# ---------------------------------------------------------------------------

#: aiodicom's Implementation Class UID: a UUID-derived OID (PS3.5 B.2) from the
#: fixed UUID 9efea97d-d56b-4f06-b22e-32512e17b5f6.
IMPLEMENTATION_CLASS_UID: Final = "2.25.211340304432877920896909238886605501942"
#: aiodicom's Implementation Version Name (at most 16 characters).
IMPLEMENTATION_VERSION_NAME: Final = "AIODICOM_010"

_DIGITS: Final = frozenset("0123456789")


def uid_is_valid(uid: str) -> bool:
    """Return whether *uid* is a syntactically valid UID (PS3.5 Section 9.1).

    A valid UID is at most 64 characters long and consists of one or more
    components separated by ``"."``; each component is a non-empty string of
    the ASCII digits ``0-9`` without a leading zero (a lone ``"0"`` is
    allowed).  Padding (trailing NUL or space) is *not* accepted: strip it
    first.  Non-``str`` input returns ``False``.
    """
    if not isinstance(uid, str) or not 0 < len(uid) <= 64:
        return False
    for component in uid.split("."):
        if not component or not _DIGITS.issuperset(component):
            return False
        if len(component) > 1 and component[0] == "0":
            return False
    return True
