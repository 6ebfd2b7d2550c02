import numpy as np
import pytest

from art.errors import InputError
from art.plan import Beam, Plan, Segment


def test_segment_validation():
    lp = np.zeros((2, 60))
    with pytest.raises(InputError, match="shape"):
        Segment(np.zeros((3, 60)), (-10, 10, -10, 10), 5)
    bad = lp.copy()
    bad[0, 4] = 5.0
    with pytest.raises(InputError, match="leaf pair 4"):
        Segment(bad, (-10, 10, -10, 10), 5)
    with pytest.raises(InputError, match="jaws"):
        Segment(lp, (10, -10, -10, 10), 5)
    with pytest.raises(InputError, match="mu"):
        Segment(lp, (-10, 10, -10, 10), -1)


def test_beam_and_plan_validation():
    b = Beam("A", 0.0, isocenter_lps=[1, 2, 3])
    assert b.isocenter_lps.shape == (3,) and b.total_mu == 0.0
    with pytest.raises(InputError, match="isocenter"):
        Beam("A", 0.0, isocenter_lps=[1, 2])
    with pytest.raises(InputError, match="fluence"):
        Beam("A", 0.0, fluence=np.ones((2, 3)), fluence_grid={"x_edges_mm": np.arange(3), "y_edges_mm": np.arange(3)})
    with pytest.raises(InputError, match="fractions"):
        Plan([b], 0, "m")
    with pytest.raises(InputError, match="unique"):
        Plan([b, Beam("A", 90.0)], 1, "m")
    seg = Segment(np.zeros((2, 60)), (-10, 10, -10, 10), 7.5)
    p = Plan([Beam("A", 0.0, segments=[seg, seg])], 20, "m")
    assert p.total_mu == {"A": 15.0}
