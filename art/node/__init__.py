"""The DICOM node and batch engine: art at a clinic's scale (issue 18).

``art serve`` receives CT/CBCT series over DICOM (a Storage SCP), maps each to its
registered reference (a SQLite patient registry), runs the daily re-plan as a job on
``dask.distributed`` and sends the results by C-STORE to the configured destinations;
``art batch`` runs many re-plans from a manifest on the same engine. Job state lives in
SQLite so a restarted node resumes its queue. Patient names and IDs are never logged.

This is the top layer: it uses :mod:`art.jobs` and the I/O layer, nothing uses it.
Submodules are imported lazily (``import art`` stays light).
"""
