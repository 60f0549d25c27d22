"""Downstream metrics: pure functions on numpy arrays / Python values, no torch state.

All scores are on the ActBERT paper's scale: recalls and accuracies in percent, BLEU / METEOR /
ROUGE-L ×100, CIDEr as is, ranks 1-based. Unusable input raises ``MetricInputError`` (ValueError).

* ``retrieval``: R@1/5/10, MedR, MeanR from a [texts, videos] similarity matrix (pessimistic ties).
* ``captioning``: BLEU-1..4, METEOR, ROUGE-L, CIDEr via pycocoevalcap.
* ``accuracy``: multiple-choice and fill-in-the-blank accuracy.
* ``segmentation``: frame accuracy, per-class accuracy.
* ``step_localization``: CrossTask step recall.
* ``table``: results dicts → Markdown.
"""

from .accuracy import fill_in_blank_accuracy, multiple_choice_accuracy, multiple_choice_correct
from .captioning import CaptionScores, caption_metrics, simple_tokenize
from .errors import MetricInputError
from .retrieval import ground_truth_ranks, rank_metrics, retrieval_metrics
from .segmentation import frame_accuracy, per_class_accuracy, segmentation_metrics
from .step_localization import StepLocalizationVideo, crosstask_recall, video_step_hits
from .table import format_value, markdown_row, markdown_table

__all__ = [
    "CaptionScores",
    "MetricInputError",
    "StepLocalizationVideo",
    "caption_metrics",
    "crosstask_recall",
    "fill_in_blank_accuracy",
    "format_value",
    "frame_accuracy",
    "ground_truth_ranks",
    "markdown_row",
    "markdown_table",
    "multiple_choice_accuracy",
    "multiple_choice_correct",
    "per_class_accuracy",
    "rank_metrics",
    "retrieval_metrics",
    "segmentation_metrics",
    "simple_tokenize",
    "video_step_hits",
]
