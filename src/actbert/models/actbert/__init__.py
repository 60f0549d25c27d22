"""ActBERT (Zhu & Yang, CVPR 2020): the ``actbert`` architecture.

``configuration.py`` (:class:`ActBertConfig`), ``batch.py`` (:class:`ActBertBatch`, its input),
``processing.py`` (samples / task items -> batch), ``tangled.py`` (the tangled block),
``modeling.py`` (embeddings, encoder, heads, :class:`ActBertForPretraining`).
"""

from actbert.models.actbert.batch import ActBertBatch
from actbert.models.actbert.configuration import LOSS_NAMES, ActBertConfig, BatchError, replace_config
from actbert.models.actbert.modeling import (
    ActBertEncoderOutput,
    ActBertForPretraining,
    ActBertModel,
    CrossModalMatchingHead,
    MaskedLanguageModelHead,
    PretrainingOutput,
)
from actbert.models.actbert.processing import ActBertProcessor, Collator, random_batch

__all__ = [
    "LOSS_NAMES",
    "ActBertBatch",
    "ActBertConfig",
    "ActBertEncoderOutput",
    "ActBertForPretraining",
    "ActBertModel",
    "ActBertProcessor",
    "BatchError",
    "Collator",
    "CrossModalMatchingHead",
    "MaskedLanguageModelHead",
    "PretrainingOutput",
    "random_batch",
    "replace_config",
]
