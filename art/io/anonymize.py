"""De-identified copies of DICOM files, with consistent UID remapping.

:func:`anonymize_folder` writes a de-identified copy of every DICOM file under
a folder (CT/CBCT series, RTSTRUCT, RTPLAN, RTDOSE, spatial registration ...)
and never modifies the source.  It implements a *subset* of the DICOM PS3.15
Annex E Basic Application Level Confidentiality Profile (Table E.1-1), chosen
for radiotherapy objects; what it does, element by element, at every nesting
level (inside sequences too):

* **Patient identity replaced**: PatientName becomes ``ANON^<pseudonym>`` and
  PatientID ``ANON<pseudonym>``, the pseudonym being a salted hash of the
  original PatientID (one pseudonym per patient; the same salt gives the same
  pseudonym in another run).
* **Emptied** (type 2 attributes kept present, value removed): every person
  name (VR PN, e.g. ReferringPhysicianName, OperatorsName, ROIInterpreter,
  ReviewerName), every date, date-time and time (VR DA, DT, TM: birth,
  study, series, content, structure-set, plan, review dates ...), and
  :data:`EMPTIED` (AccessionNumber, StudyID, PatientSex ...).
* **Removed**: :data:`REMOVED` (institution, station, device serial number,
  descriptions and comments, other patient IDs/names, address, age, size,
  weight, physicians' and operators' identification sequences, requesting
  information, clinical-trial identifiers, ...), all private elements, curve
  and overlay groups (50xx, 60xx), non-private elements of unknown VR (UN),
  and the file meta SourceApplicationEntityTitle.
* **UIDs remapped**: every UID value (VR UI) that is not a registered DICOM
  UID (SOP classes, transfer syntaxes, well-known frames of reference ...) and
  not in :data:`KEPT_UID_KEYWORDS` is replaced by
  ``2.25.<salted hash of the original>``, in the dataset and in the file meta
  (MediaStorageSOPInstanceUID).  The same original UID gets the same new UID
  in every file of the call, so every reference survives: Study/Series/SOP
  Instance and Frame of Reference UIDs and their references
  (ReferencedSOPInstanceUID in an RTSTRUCT ContourImageSequence, an RTPLAN
  ReferencedStructureSetSequence, an RTDOSE ReferencedRTPlanSequence,
  registration objects' FrameOfReferenceUID and referenced images,
  RelatedFrameOfReferenceUID ...).
* **Marked**: PatientIdentityRemoved ``YES``, DeidentificationMethod, and
  LongitudinalTemporalInformationModified ``REMOVED``.

**Kept**: pixel data and every geometric or dosimetric attribute; labels and
names the RT objects need (StructureSetLabel, ROIName, RTPlanLabel, BeamName,
TreatmentMachineName, SeriesNumber ...) are kept as they are: they are free
text and may contain identifying information that this function does not
detect.  An image whose BurnedInAnnotation is ``YES`` is refused: its pixels
may show identity.

File names are not copied (they often hold UIDs): each output file is
``<Modality>.<new SOPInstanceUID>.dcm`` in the same relative folder, whose
name has original UIDs and patient ID or name parts replaced.  Files that are
not DICOM (reports, JSON, TOML) are not copied; they are listed as skipped.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Any

from art.errors import DicomError, InputError

__all__ = ["anonymize_folder", "anonymize_dataset", "REMOVED", "EMPTIED", "KEPT_UID_KEYWORDS"]

DEIDENTIFICATION_METHOD = "art: PS3.15 E.1-1 basic profile subset; UIDs remapped"
"""Value written to DeidentificationMethod (0012,0063) (LO, at most 64 characters)."""

REMOVED: frozenset[str] = frozenset(
    {
        # patient
        "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
        "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "PatientAge", "PatientSize",
        "PatientWeight", "PatientBirthTime", "PatientComments", "PatientReligiousPreference", "EthnicGroup",
        "Occupation", "MilitaryRank", "BranchOfService", "CountryOfResidence", "RegionOfResidence",
        "MedicalRecordLocator", "MedicalAlerts", "Allergies", "AdditionalPatientHistory", "PatientState",
        "SmokingStatus", "SpecialNeeds", "PatientInsurancePlanCodeSequence", "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence", "PatientInstitutionResidence", "CurrentPatientLocation",
        "AdmissionID", "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "VisitComments",
        "ReferencedPatientSequence", "ReferencedPatientPhotoSequence", "ResponsiblePerson",
        "ResponsibleOrganization", "PatientSexNeutered",
        # institution, equipment, staff
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
        "StationName", "DeviceSerialNumber", "DeviceUID", "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianIdentificationSequence",
        "NameOfPhysiciansReadingStudy", "PhysiciansReadingStudyIdentificationSequence",
        "OperatorIdentificationSequence", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
        "ReferringPhysicianIdentificationSequence", "PersonIdentificationCodeSequence", "PersonAddress",
        "PersonTelephoneNumbers", "ContentCreatorIdentificationCodeSequence",
        # request and procedure
        "RequestAttributesSequence", "RequestingPhysician", "RequestingService", "RequestedProcedureID",
        "RequestedProcedureDescription", "ReasonForStudy", "ReasonForTheRequestedProcedure",
        "PerformedProcedureStepID", "PerformedProcedureStepDescription", "ScheduledProcedureStepID",
        "ScheduledProcedureStepDescription", "ProtocolName", "StudyDescription", "SeriesDescription",
        "ProcedureCodeSequence", "DerivationDescription",
        # comments and free-text descriptions
        "ImageComments", "FrameComments", "AcquisitionComments", "TextComments", "StudyComments",
        "InterpretationText", "ImpressionsText", "RTPlanName", "RTPlanDescription", "StructureSetName",
        "StructureSetDescription", "ROIDescription", "ROIGenerationDescription", "ROIObservationDescription",
        "BeamDescription", "FractionGroupDescription", "DoseComment", "DoseReferenceDescription",
        "TreatmentSite", "PrescriptionDescription", "SetupTechniqueDescription",
        # clinical trials
        "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
        "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID",
        "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription",
        "ClinicalTrialCoordinatingCenterName", "ClinicalTrialSeriesID", "ClinicalTrialSeriesDescription",
        "ClinicalTrialProtocolEthicsCommitteeName", "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
        # file meta
        "SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
        "PrivateInformation", "PrivateInformationCreatorUID",
    }
)
"""Keywords of the attributes deleted wherever they occur."""

EMPTIED: frozenset[str] = frozenset(
    {"AccessionNumber", "StudyID", "PatientSex", "ReferringPhysicianName", "PatientBirthDate", "ContentCreatorName"}
)
"""Keywords of attributes kept with an empty value (besides every PN, DA, DT and TM element)."""

KEPT_UID_KEYWORDS: frozenset[str] = frozenset(
    {
        "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "AffectedSOPClassUID",
        "RequestedSOPClassUID", "ReferencedSOPClassUIDInFile", "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile", "ImplementationClassUID", "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID",
        "MappingResourceUID", "ContextUID",
    }
)
"""Keywords of UID attributes that name classes or syntaxes, never instances: not remapped."""

_EMPTIED_VRS = {"PN", "DA", "DT", "TM"}
_UID_IN_TEXT = re.compile(r"\d+(?:\.\d+){3,}")


class _Anonymizer:
    """State of one call: the salt, the UID map and the patients' pseudonyms."""

    def __init__(self, salt: str):
        from pydicom._uid_dict import UID_dictionary

        self.salt = salt
        self.registered = set(UID_dictionary)
        self.uid_map: dict[str, str] = {}

    def new_uid(self, uid: str) -> str:
        uid = uid.strip().rstrip("\x00")
        if not uid or uid in self.registered:
            return uid
        new = self.uid_map.get(uid)
        if new is None:
            digest = hashlib.sha256(f"art-anon\x1f{self.salt}\x1f{uid}".encode()).digest()[:16]
            new = f"2.25.{int.from_bytes(digest, 'big')}"
            self.uid_map[uid] = new
        return new

    def pseudonym(self, patient_id: str, patient_name: str) -> str:
        key = patient_id.strip() or patient_name.strip()
        return hashlib.sha256(f"art-anon-patient\x1f{self.salt}\x1f{key}".encode()).hexdigest()[:10].upper()


def _remap_uid_value(anon: _Anonymizer, value: Any) -> Any:
    from pydicom.multival import MultiValue

    if isinstance(value, (list, MultiValue)):
        return [anon.new_uid(str(v)) for v in value]
    if value is None or str(value) == "":
        return value
    return anon.new_uid(str(value))


def _clean(ds: Any, anon: _Anonymizer, pseudonym: str) -> None:
    """De-identify one dataset (and every sequence item in it) in place."""
    for tag in list(ds.keys()):
        elem = ds[tag]
        group = tag >> 16
        keyword = elem.keyword
        if tag.is_private or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF or elem.VR == "UN":
            del ds[tag]
            continue
        if keyword in REMOVED:
            del ds[tag]
            continue
        if keyword == "PatientName":
            elem.value = f"ANON^{pseudonym}"
        elif keyword == "PatientID":
            elem.value = f"ANON{pseudonym}"
        elif keyword in EMPTIED or elem.VR in _EMPTIED_VRS:
            elem.value = None if elem.VR != "SQ" else []
        elif elem.VR == "UI":
            if keyword not in KEPT_UID_KEYWORDS:
                elem.value = _remap_uid_value(anon, elem.value)
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean(item, anon, pseudonym)


def anonymize_dataset(ds: Any, *, salt: str, _anon: _Anonymizer | None = None) -> Any:
    """De-identify one pydicom dataset in place (the rules of this module) and return it.

    Parameters
    ----------
    ds : pydicom.Dataset
        A dataset, with or without file meta.
    salt : str, keyword-only
        Secret salt of the UID and pseudonym hashes: the same salt maps the
        same UID to the same new UID (use one salt for all objects of a patient).

    Returns
    -------
    pydicom.Dataset
        ``ds`` itself, de-identified.

    Raises
    ------
    InputError
        BurnedInAnnotation is ``YES`` (pixels may show identity).
    """
    anon = _anon if _anon is not None else _Anonymizer(str(salt))
    if str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
        raise InputError("image has burned-in annotation (BurnedInAnnotation YES): its pixels cannot be de-identified")
    pseudonym = anon.pseudonym(str(ds.get("PatientID", "") or ""), str(ds.get("PatientName", "") or ""))
    _clean(ds, anon, pseudonym)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                   "PrivateInformation", "PrivateInformationCreatorUID"):
            if kw in meta:
                delattr(meta, kw)
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds


def _tokens(ds: Any) -> set[str]:
    """Patient ID and name parts (3+ characters) to scrub from folder names."""
    out = set()
    pid = str(ds.get("PatientID", "") or "").strip()
    if len(pid) >= 3:
        out.add(pid)
    for part in re.split(r"[\^ =,]+", str(ds.get("PatientName", "") or "")):
        if len(part) >= 3:
            out.add(part)
    return out


def _safe_dir(part: str, anon: _Anonymizer, tokens: set[str]) -> str:
    part = _UID_IN_TEXT.sub(lambda m: anon.new_uid(m.group(0)), part)
    for t in sorted(tokens, key=len, reverse=True):
        part = re.sub(re.escape(t), "ANON", part, flags=re.IGNORECASE)
    return part


def _safe_modality(ds: Any) -> str:
    m = "".join(c for c in str(ds.get("Modality", "") or "") if c.isalnum()).upper()
    return m or "DICOM"


def anonymize_folder(src: str | Path, dst: str | Path, *, salt: str | None = None) -> dict:
    """Write de-identified copies of every DICOM file under ``src`` into ``dst``.

    The rules (what is replaced, emptied, removed, remapped and kept) are in
    the module docstring.  ``src`` is never modified; ``dst`` is written
    atomically (complete or not at all) and replaced if it exists.

    Parameters
    ----------
    src : str or Path
        Folder searched recursively for DICOM files.
    dst : str or Path
        Result folder; must not be ``src``, inside it, or contain it.
    salt : str, optional, keyword-only
        Secret that keys the UID remapping and the patient pseudonym.  With
        the same salt, another call maps the same UIDs to the same new UIDs
        (useful to anonymise a patient's objects in several calls); keep it
        secret: with it, original UIDs can be confirmed.  ``None`` (default):
        a random salt, so the mapping cannot be reproduced.

    Returns
    -------
    dict
        ``files``: one ``{"source", "destination", "modality", "sop_class"}``
        per DICOM file (paths relative to ``src`` and ``dst``, POSIX);
        ``skipped``: the non-DICOM files, not copied; ``n_files``;
        ``n_uids_remapped``; ``n_patients``; ``salt``: ``"given"`` or
        ``"random"``; ``method``: the DeidentificationMethod text.  The UID map
        itself is not returned (it re-identifies).

    Raises
    ------
    InputError
        ``src`` missing or without DICOM files, ``dst`` overlapping ``src``,
        an image with burned-in annotation (names the file).
    DicomError
        An unreadable DICOM file (names it).
    """
    from art.io.dicom_files import find_dicom_files
    from art.outputs import atomic_output_dir

    src = _check_folders(src, dst, salt)
    anon = _Anonymizer(salt if salt is not None else secrets.token_hex(16))

    dicom, other = find_dicom_files(src)
    if not dicom:
        raise InputError("no DICOM files to anonymise", path=src)
    tokens, patients = _scan_headers(dicom)  # pass 1: refuse burned-in pixels before writing anything

    files = []
    used: set[Path] = set()
    with atomic_output_dir(dst) as tmp:
        for p in dicom:  # pass 2: the de-identified copies
            files.append(_write_copy(p, src, tmp, anon, tokens, used))
    return {
        "n_files": len(files),
        "files": files,
        "skipped": [q.relative_to(src).as_posix() for q in other],
        "n_uids_remapped": len(anon.uid_map),
        "n_patients": len(patients),
        "salt": "given" if salt is not None else "random",
        "method": DEIDENTIFICATION_METHOD,
    }


def _check_folders(src: str | Path, dst: str | Path, salt: Any) -> Path:
    """Check the arguments of :func:`anonymize_folder`.

    Parameters
    ----------
    src, dst : str or Path
        Source folder (must exist) and result folder (must not overlap it).
    salt : str or None
        Must be a string or None.

    Returns
    -------
    Path
        ``src``.

    Raises
    ------
    InputError
        ``src`` missing, ``salt`` not a string, or ``dst`` is ``src``, inside it or contains it.
    """
    src = Path(src)
    if not src.is_dir():
        raise InputError("folder to anonymise not found (or not a folder)", path=src)
    if salt is not None and not isinstance(salt, str):
        raise InputError(f"salt must be a string or None, got {type(salt).__name__}")
    s_res, d_res = src.resolve(), Path(dst).absolute().resolve()
    if s_res == d_res or s_res in d_res.parents or d_res in s_res.parents:
        raise InputError(f"the anonymised folder must be outside the source folder {src}", path=dst)
    return src


def _scan_headers(dicom: list[Path]) -> tuple[set[str], set[str]]:
    """Pass 1 of :func:`anonymize_folder`: read every header, refuse burned-in annotation, collect identities.

    Parameters
    ----------
    dicom : list of Path
        The DICOM files.

    Returns
    -------
    tokens : set of str
        Patient IDs and name parts (3+ characters) to scrub from folder names.
    patients : set of str
        One key (PatientID, else PatientName) per patient.

    Raises
    ------
    InputError
        A file with BurnedInAnnotation ``YES`` (names it).
    """
    from art.io.dicom_common import read_dataset

    tokens: set[str] = set()
    patients: set[str] = set()
    for p in dicom:
        ds = read_dataset(p, stop_before_pixels=True)
        if str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
            raise InputError("image has burned-in annotation (BurnedInAnnotation YES): its pixels cannot be de-identified", path=p)
        tokens |= _tokens(ds)
        patients.add(str(ds.get("PatientID", "") or "") or str(ds.get("PatientName", "") or ""))
    return tokens, patients


def _write_copy(p: Path, src: Path, tmp: Path, anon: _Anonymizer, tokens: set[str], used: set[Path]) -> dict:
    """Pass 2 of :func:`anonymize_folder` for one file: read it whole, de-identify it, write the copy.

    Parameters
    ----------
    p : Path
        The source file, under ``src``.
    src : Path
        The source folder.
    tmp : Path
        The result folder being written.
    anon : _Anonymizer
        The call's salt and UID map (updated).
    tokens : set of str
        Identity tokens scrubbed from the folder names.
    used : set of Path
        Relative destinations written so far (updated).

    Returns
    -------
    dict
        ``{"source", "destination", "modality", "sop_class"}`` (POSIX paths
        relative to ``src`` and the result folder).

    Raises
    ------
    DicomError
        Truncated pixel data, or the copy cannot be written (names ``p``).
    InputError
        Burned-in annotation (names ``p``).
    """
    import warnings

    from pydicom.uid import UID

    from art.io.dicom_common import read_dataset
    from art.io.dicom_files import pixel_data_problem

    ds = read_dataset(p)
    problem = pixel_data_problem(ds)
    if problem:
        raise DicomError(problem, path=p)
    try:
        anonymize_dataset(ds, salt=anon.salt, _anon=anon)
    except InputError as exc:
        raise InputError(exc.problem, path=p) from exc
    rel, modality = _destination(p, src, ds, anon, tokens, used)
    out = tmp / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # emptied type-1 values are the source's problem, not ours
            ds.save_as(str(out), enforce_file_format=True)
    except Exception as exc:
        raise DicomError(f"cannot write its anonymised copy: {type(exc).__name__}: {exc}", path=p) from exc
    sop = str(ds.get("SOPClassUID", "") or "")
    return {
        "source": p.relative_to(src).as_posix(),
        "destination": rel.as_posix(),
        "modality": modality,
        "sop_class": UID(sop).name if sop else "unknown",
    }


def _destination(p: Path, src: Path, ds: Any, anon: _Anonymizer, tokens: set[str], used: set[Path]) -> tuple[Path, str]:
    """The relative path of the de-identified copy of ``p``: ``<folders>/<Modality>.<new SOPInstanceUID>.dcm``.

    Parameters
    ----------
    p, src : Path
        The source file and folder.
    ds : pydicom.Dataset
        The de-identified dataset.
    anon : _Anonymizer
        Maps UIDs in folder names (and, without a SOPInstanceUID, the file path).
    tokens : set of str
        Identity tokens replaced by ``ANON`` in folder names.
    used : set of Path
        Destinations already taken: a repeat gets ``-2``, ``-3`` ... (updated).

    Returns
    -------
    rel : Path
        The destination, relative to the result folder.
    modality : str
        The cleaned Modality used in the name.
    """
    rel_dir = Path(*[_safe_dir(part, anon, tokens) for part in p.relative_to(src).parent.parts])
    modality = _safe_modality(ds)
    name = f"{modality}.{ds.get('SOPInstanceUID', '') or anon.new_uid(str(p))}"
    rel = rel_dir / f"{name}.dcm"
    k = 1
    while rel in used:  # the same instance twice in the source
        k += 1
        rel = rel_dir / f"{name}-{k}.dcm"
    used.add(rel)
    return rel, modality
