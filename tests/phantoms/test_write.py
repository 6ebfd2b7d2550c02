"""`art phantom` writes a readable patient with ground truth."""

from art.io.rtstruct import read_rtstruct
from art.io.series import read_image_series
from art_cli.app import run
from art_phantoms.write import load_truth


def test_art_phantom_writes_readable_dicom_and_truth(tmp_path):
    out = tmp_path / "p"
    assert run(["phantom", "--seed", "2", "--fractions", "1", "--spacing", "4,4,4", "--out", str(out)]) == 0
    ct = read_image_series(out / "CT")
    cbct = read_image_series(out / "CBCT_01")
    assert cbct.frame_of_reference_uid == ct.frame_of_reference_uid
    ss = read_rtstruct(out / "RTSTRUCT.dcm", ct)
    assert {"BODY", "PTV", "CTV", "Rectum", "Bladder"} <= set(ss.names)
    truth = load_truth(out, 1)
    assert truth.daily_to_planning.shape == truth.daily_grid.shape + (3,)
    assert "PTV" in truth.structures
    assert (out / "protocol.toml").is_file() and (out / "manifest.json").is_file()
