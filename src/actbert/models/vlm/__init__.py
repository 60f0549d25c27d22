"""VLM (Xu et al., 2021), fairseq MMPT's task-agnostic video-language model: the ``vlm`` architecture.

``configuration.py`` (:class:`VLMConfig`), ``modeling.py`` (:class:`VLMForPretraining`: the joint
encoder, the masked token loss, isolated-mask retrieval and the separate passes, numerically equal
to MMPT on ``vlm_small``), ``processing.py`` (:class:`VLMProcessor`: per-second features + text ->
MMPT's batch; MMM / MFM-MLM masking), ``convert.py`` (MMPT checkpoints under upstream names, read
without running pickle code), ``parity.py`` (``actbert check-parity vlm DIR``). User guide: docs/vlm.md.
"""

from actbert.models.vlm.configuration import VLMConfig, VLMConfigError
from actbert.models.vlm.modeling import (
    VLMEncoderOutput,
    VLMForPretraining,
    VLMPretrainingOutput,
    VLMRetrievalOutput,
    isolated_mask,
    mm_contrastive_loss,
    t2v_contrastive_loss,
)
from actbert.models.vlm.processing import VLMBatch, VLMInputError, VLMProcessor

__all__ = [
    "VLMBatch",
    "VLMConfig",
    "VLMConfigError",
    "VLMEncoderOutput",
    "VLMForPretraining",
    "VLMInputError",
    "VLMPretrainingOutput",
    "VLMProcessor",
    "VLMRetrievalOutput",
    "isolated_mask",
    "mm_contrastive_loss",
    "t2v_contrastive_loss",
]
