"""art.course: the course, not only the day — each fraction's delivered dose accumulated on the planning CT.

Modules (imported on use; this package imports nothing itself):

* :mod:`art.course.warp` — the deformation maths: inverse field, dose pull,
  energy/mass-conserving accumulation, Jacobian, integral dose.

docs/course.md describes how the dose is accumulated.
"""
