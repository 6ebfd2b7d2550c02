"""The course, not only the day: dose accumulation over the treated fractions (issue 20).

* :mod:`art.course.warp` — the deformation maths: inverse field, dose pull, the
  energy/mass-conserving accumulation, Jacobian, integral dose;
* :mod:`art.course.fraction` — :func:`read_fraction`: one finished ``art replan`` folder
  as the dose delivered that day, its deformation and its checks;
* :mod:`art.course.accumulate` — :func:`accumulate`: the fractions' doses mapped onto the
  planning CT and summed, goals on the cumulative dose, the projection to the full course;
* :mod:`art.course.job` — :func:`course_job`: ``art course`` (RTDOSE, summary.json, report);
* :mod:`art.course.report` — the course report page.

Dose in Gy, lengths in mm, LPS, arrays (z, y, x). docs/course.md describes the command and the maths.
"""
