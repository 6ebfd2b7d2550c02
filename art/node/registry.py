"""``art register``: put a patient's reference folder into the node's registry.

The reference folder is read and checked exactly as ``art replan`` reads it (planning CT,
RTSTRUCT, RTPLAN, protocol.toml, all consistent), so a patient is registered only with a
reference a re-plan can use. Its PatientID (stored hashed) and the planning CT's frame of
reference are the keys a received series is matched on.
"""

from __future__ import annotations

from pathlib import Path

from art.node.store import NodeStore

__all__ = ["register_reference"]


def register_reference(store: NodeStore, reference_dir: str | Path) -> dict:
    """Check a reference folder and register it.

    Parameters
    ----------
    store : NodeStore
        The node's database.
    reference_dir : str or Path
        The reference folder (what ``art replan --reference`` takes).

    Returns
    -------
    dict
        ``frame_of_reference_uid``, ``reference`` (absolute path), ``protocol`` (its name) and
        ``patient`` (the registry key's first 12 characters; never the ID).

    Raises
    ------
    InputError
        The folder is not a usable reference (the message names the file and the problem),
        or the planning CT carries no PatientID.
    """
    from art.errors import InputError
    from art.node.store import patient_key
    from art.reference import load_reference

    folder = Path(reference_dir).absolute()
    reference = load_reference(folder)
    patient_id = str(getattr(reference.ct.patient, "id", "") or "").strip()
    if not patient_id:
        raise InputError("the planning CT has no PatientID (0010,0020): a received series could not be matched to it", path=reference.paths["ct"])
    frame = reference.ct.frame_of_reference_uid
    store.register_patient(patient_id, frame, folder, protocol=reference.protocol.name)
    return {"patient": patient_key(patient_id)[:12], "frame_of_reference_uid": frame, "reference": str(folder), "protocol": reference.protocol.name}
