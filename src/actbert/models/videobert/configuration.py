"""VideoBERT's configuration: :class:`VideoBertConfig` (the ``model:`` section of a ``videobert`` preset).

One BERT over one vocabulary: the tokenizer's WordPiece ids ``[0, vocab_size)``, then ``[>]``
(id ``vocab_size``), then the ``visual_vocab_size`` visual words (id ``vocab_size + 1 + j`` for
word ``j`` of the visual vocabulary). ``fill_config_from_data`` fills the sizes from the tokenizer,
the visual vocabulary folder (``visual_vocab``) and the store.

Defaults are the paper's where it gives them (BERT-large, d=4/k=12, frozen input embeddings, the
templates of 4.4 and 4.6); the regime mixture and the sampling constants it does not give are
marked as our choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actbert.config import ConfigError
from actbert.models.layers import ACTIVATIONS

LOSS_NAMES = ("text_mlm", "video_mlm", "cloze", "align")
REGIMES = ("text", "video", "text_video")  # paper 3.2: text-only, video-only, video-text
ZERO_SHOT_TEMPLATE = "now let me show you how to [MASK] the [MASK]"  # paper 4.4
FEATURE_TEMPLATE = "now let's [MASK] the [MASK] to the [MASK], and then [MASK] the [MASK]."  # paper 4.6


@dataclass
class VideoBertConfig:
    """Hyper-parameters of :class:`~actbert.models.videobert.modeling.VideoBertForPretraining`."""

    architecture: str = "videobert"
    # the BERT (paper: BERT-large)
    vocab_size: int = 30524  # the tokenizer's ids (WordPiece + [ACT]/[REGION]); filled from the tokenizer
    hidden_size: int = 1024
    num_heads: int = 16
    intermediate_size: int = 4096
    num_layers: int = 24
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0 = text, 1 = [>] and visual words
    pad_token_id: int = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    mask_token_id: int = 103
    # the visual vocabulary (`actbert build-visual-vocab` output folder); sizes filled from it
    visual_vocab: str | None = None
    vocab_depth: int = 4  # d levels of the hierarchical k-means (paper 4.2); `actbert build-visual-vocab` fits it
    vocab_branching: int = 12  # k clusters per level (paper: 12)
    visual_vocab_size: int = 20736  # k**d (paper: 12**4)
    feature_dim: int = 1024  # width of the clip features the vocabulary quantises (paper: S3D, 1024)
    clip_seconds: float = 1.5
    # visual word rows: "centroids" = the leaf centroids through a fixed random projection to the
    # hidden width (paper 4.3 copies the S3D centroids, which are as wide as BERT-large); "random"
    visual_init: str = "centroids"
    freeze_input_embeddings: bool = True  # paper 4.3: "The input embeddings are frozen during pretraining"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    initializer_range: float = 0.02
    loss_weights: dict[str, float] = field(default_factory=lambda: {name: 1.0 for name in LOSS_NAMES})
    # pretraining sampling (paper 3.2). The share of each regime is not in the paper (our choice).
    regime_probs: dict[str, float] = field(default_factory=lambda: {"text": 0.25, "video": 0.25, "text_video": 0.5})
    visual_mask_probability: float = 0.15  # BERT's rule on visual words (80% [MASK], 10% random word, 10% kept)
    max_sentences: int = 4  # text-video: 1..max_sentences neighbouring ASR sentences concatenated
    max_subsample: int = 5  # visual words subsampled at a random rate of 1..max_subsample steps
    video_only_tokens: int = 16  # a video-only segment (the paper's segment when ASR is absent)
    max_visual_tokens: int = 32
    cloze_on_negatives: bool = False  # masked-token losses of misaligned text-video pairs (ActBERT ignores them too)
    # text-less task inputs (captioning, segmentation) use the paper's feature template (4.6); "" = no text
    feature_template: str = FEATURE_TEMPLATE
    zero_shot_template: str = ZERO_SHOT_TEMPLATE
    # caption memory (4.6): "pooled" = [mean of the visual-word states ; mean of the template's [MASK]
    # states], one slot, as the paper; "tokens" = every visual-word state with that mask mean appended
    caption_memory_mode: str = "pooled"
    text_init: str | None = None  # a BERT-family checkpoint for the text weights (folder or package)

    def __post_init__(self) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"VideoBertConfig.{key}: {why}")

        if self.architecture != "videobert":
            fail("architecture", f"must be 'videobert' for this model, got {self.architecture!r}")
        for key in ("vocab_size", "hidden_size", "num_heads", "intermediate_size", "max_position_embeddings",
                    "type_vocab_size", "visual_vocab_size", "feature_dim", "max_sentences", "max_subsample",
                    "video_only_tokens", "max_visual_tokens"):
            if getattr(self, key) <= 0:
                fail(key, f"must be positive, got {getattr(self, key)}")
        if self.num_layers < 0:
            fail("num_layers", f"must be >= 0, got {self.num_layers}")
        if self.hidden_size % self.num_heads:
            fail("num_heads", f"{self.num_heads} does not divide hidden_size={self.hidden_size}")
        if self.type_vocab_size < 2:
            fail("type_vocab_size", f"needs 2 token types (text, video), got {self.type_vocab_size}")
        if self.activation not in ACTIVATIONS:
            fail("activation", f"{self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        if self.visual_init not in ("centroids", "random"):
            fail("visual_init", f"{self.visual_init!r} is not one of ['centroids', 'random']")
        if self.caption_memory_mode not in ("pooled", "tokens"):
            fail("caption_memory_mode", f"{self.caption_memory_mode!r} is not one of ['pooled', 'tokens']")
        for key in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                fail(key, f"must be in [0, 1), got {getattr(self, key)}")
        if not 0.0 <= self.visual_mask_probability <= 1.0:
            fail("visual_mask_probability", f"must be in [0, 1], got {self.visual_mask_probability}")
        unknown = sorted(set(self.loss_weights) - set(LOSS_NAMES))
        if unknown:
            fail("loss_weights", f"unknown loss name(s) {unknown}; known: {list(LOSS_NAMES)}")
        self.loss_weights = {name: float(self.loss_weights.get(name, 1.0)) for name in LOSS_NAMES}
        unknown = sorted(set(self.regime_probs) - set(REGIMES))
        if unknown:
            fail("regime_probs", f"unknown regime(s) {unknown}; known: {list(REGIMES)}")
        probs = {name: float(self.regime_probs.get(name, 0.0)) for name in REGIMES}
        if any(p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
            fail("regime_probs", f"must be >= 0 with a positive sum, got {probs}")
        self.regime_probs = probs

    # -- the joint vocabulary
    @property
    def next_token_id(self) -> int:
        """The id of ``[>]`` (text-video separator)."""
        return self.vocab_size

    @property
    def visual_offset(self) -> int:
        """Joint id of visual word 0."""
        return self.vocab_size + 1

    @property
    def joint_vocab_size(self) -> int:
        return self.vocab_size + 1 + self.visual_vocab_size


__all__ = ["FEATURE_TEMPLATE", "LOSS_NAMES", "REGIMES", "VideoBertConfig", "ZERO_SHOT_TEMPLATE"]
