"""PaddleVideo's ActBERT (the released implementation) ported to PyTorch: the ``paddlevideo`` architecture.

``modeling.py`` (the model and its loss, numerically equal to Paddle on the fixture),
``convert.py`` (``actbert convert-paddle``: a released ``.pdparams`` -> a ``from_pretrained``
folder, read without running pickle code), ``processing.py`` (PaddleVideo's MSR-VTT test layout
and the pretraining batch). User guide: docs/paddle.md.
"""

from actbert.models.paddlevideo.modeling import (
    MATCHED_CLASS,
    PaddleVideoActBert,
    PaddleVideoActBertConfig,
    PaddleVideoActBertModel,
    PaddleVideoOutput,
    matched_probability,
    paddlevideo_pretraining_loss,
)

__all__ = [
    "MATCHED_CLASS",
    "PaddleVideoActBert",
    "PaddleVideoActBertConfig",
    "PaddleVideoActBertModel",
    "PaddleVideoOutput",
    "matched_probability",
    "paddlevideo_pretraining_loss",
]
