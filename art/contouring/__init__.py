"""art.contouring: organ segmentation on the daily CBCT with a compact 3D U-Net, with confidence.

::

    from art.contouring import segment, load_model

    result = segment(cbct)                 # shipped model, test-time augmentation
    result.structures                      # StructureSet on cbct.grid (BODY EXTERNAL, organs ORGAN)
    result.confidence                      # name -> [0, 1]
    result.flagged                         # names to review (low confidence or failed sanity check)

    model = load_model("user_model.pt")    # TorchScript + user_model.json card (plug-in)
    result = segment(cbct, model=model, propagated=registration_contours)

Torch is imported only when a model is loaded or trained. Training:
:func:`art.contouring.training.train` (``art train-contours``).
"""

from .confidence import confidence, dice
from .inference import CONFIDENCE_THRESHOLD, ContourResult, anatomical_checks, postprocess_mask, segment
from .labels import CLASSES
from .metrics import hd95
from .model import ContourModel, load_model, read_card, shipped_model_path

__all__ = [
    "segment",
    "ContourResult",
    "load_model",
    "ContourModel",
    "read_card",
    "shipped_model_path",
    "confidence",
    "dice",
    "hd95",
    "anatomical_checks",
    "postprocess_mask",
    "CLASSES",
    "CONFIDENCE_THRESHOLD",
]
