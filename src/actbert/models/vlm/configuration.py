"""VLM's configuration (``architecture: "vlm"``): the BERT config plus MMPT's dataset/model settings.

Field names follow the places they come from upstream: the Hugging Face BERT config
(``hidden_size``, ``num_hidden_layers`` ...; ``input_dim`` is the video feature width that
MMPT's ``VideoTokenMLP`` reads from it) and MMPT's yaml (``max_video_len``, ``max_len``,
``use_seg_emb``, ``mlm_probability``, ``mfm_probability``, ``mm_prob``, ``num_iso_layer``).
Defaults are the upstream ones of ``projects/mtm/vlm/how2.yaml`` on ``bert-base-uncased``.

Deviations from the upstream code are named settings; the one plain upstream bug (the constant 0
logit appended to every text row of the masked token loss) is off by default and
``mtm_zero_text_logit: true`` reproduces it (the parity check sets it; docs/vlm.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from actbert.errors import ActBertError
from actbert.models.layers import ACTIVATIONS, LAYER_NORM_EPS

# upstream adds (1 - mask) * -10000 to the attention scores (HF BERT 3.x)
VLM_MASKED_VALUE = -10000.0
# MMPT's MMBertEmbeddings.seg_embeddings: 256 rows, never read ("for reproducibility of initialization")
NUM_SEG_EMBEDDINGS = 256
TEXT_LABEL_IGNORE = -100


class VLMConfigError(ActBertError):
    """A VLM config that cannot build a model (names the field)."""


@dataclass
class VLMConfig:
    architecture: str = "vlm"
    # --- the BERT (transformers) config
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    # video feature width (S3D: 512); VideoTokenMLP maps it to hidden_size
    input_dim: int = 512
    # VideoTokenMLP's LayerNorm is a plain nn.LayerNorm (eps 1e-5), not BERT's 1e-12
    videomlp_layer_norm_eps: float = 1e-5
    # tokenizer ids (bert-base-uncased's; filled from the tokenizer by the data side)
    pad_token_id: int = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    mask_token_id: int = 103
    # --- MMPT dataset / model settings
    max_video_len: int = 32  # video slots (1 token per second); the caption tensor is max_len - max_video_len long
    max_len: int = 96  # joint sequence length [CLS] v.. [SEP] w.. [SEP] pad..
    use_seg_emb: bool = True  # the unused seg_embeddings table exists (upstream configs set it)
    mlm_probability: float = 0.15
    mfm_probability: float = 0.15
    mm_prob: float = 0.5  # share of examples masked as MMM (half whole-text, half whole-video)
    # retrieval / unimodal passes: the first num_iso_layer layers get the isolated mask, the rest
    # the full one (upstream's num_iso_layer; null = every layer, as the VLM configs set 12 of 12)
    num_iso_layer: int | None = None
    # the plain upstream bug: losses.MTM appends a constant 0 logit to every text row (so video and
    # text rows have equal width). false = the masked token loss of the paper (eq. 8-9)
    mtm_zero_text_logit: bool = False
    # a folder / file / installed package with BERT-named weights for the encoder (models/text_init.py)
    text_init: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def caption_len(self) -> int:
        """Length ``Lc`` of the caption tensor ``[CLS] [SEP] w.. [SEP] [PAD]..``."""
        return self.max_len - self.max_video_len

    @property
    def max_caption_words(self) -> int:
        """Word pieces a caption may hold: ``max_len - max_video_len - 3`` (upstream's text clip budget)."""
        return self.max_len - self.max_video_len - 3

    @property
    def iso_layers(self) -> int:
        """How many leading layers get the isolated mask (and whose output the retrieval pools)."""
        return self.num_hidden_layers if self.num_iso_layer is None else int(self.num_iso_layer)

    def validate(self, source: str = "VLMConfig") -> None:
        def fail(name: str, why: str) -> None:
            raise VLMConfigError(f"{source}: {name} = {getattr(self, name)!r}: {why}")

        if self.architecture != "vlm":
            fail("architecture", "must be 'vlm' for this model")
        if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads:
            fail("num_attention_heads", f"must be a positive divisor of hidden_size = {self.hidden_size}")
        if self.hidden_act not in ACTIVATIONS:
            fail("hidden_act", f"unknown activation; known: {sorted(ACTIVATIONS)}")
        if self.layer_norm_eps != LAYER_NORM_EPS:
            fail("layer_norm_eps", f"the shared BERT layers use {LAYER_NORM_EPS}")
        if self.max_video_len < 1:
            fail("max_video_len", "must be >= 1")
        if self.caption_len < 4:
            fail("max_len", f"must leave >= 4 caption slots after max_video_len = {self.max_video_len}")
        if self.max_len > self.max_position_embeddings:
            fail("max_len", f"exceeds max_position_embeddings = {self.max_position_embeddings}")
        if self.type_vocab_size < 2:
            fail("type_vocab_size", "VLM uses token types 0 (video) and 1 (text)")
        if self.num_iso_layer is not None and not 0 <= self.num_iso_layer <= self.num_hidden_layers:
            fail("num_iso_layer", f"must be in [0, num_hidden_layers = {self.num_hidden_layers}] or null")
        for name in ("mlm_probability", "mfm_probability", "mm_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "must be a probability in [0, 1]")


__all__ = ["NUM_SEG_EMBEDDINGS", "TEXT_LABEL_IGNORE", "VLMConfig", "VLMConfigError", "VLM_MASKED_VALUE"]
