"""The model interface: what every registered model family provides, in one place.

A family (``models/<family>/``) registers one class -- the model with its pretraining heads --
under its ``architecture`` name (:mod:`actbert.models.registry`). That class derives from
:class:`VideoTextModel` and provides:

* ``config_class``: its config dataclass (the ``model:`` section of a preset; an
  ``architecture`` field naming the family).
* ``processor_class``: its input processing, a :class:`~actbert.models.processing.Processor`
  subclass that turns feature-store clips + text into this model's batch -- for pretraining
  (``pretraining_collator``) and for the tasks (``batch``).
* ``fill_config_from_data(config, schema, tokenizer) -> config`` (classmethod): the data-dependent
  sizes (feature widths, vocabulary, class counts, special ids) the pretraining loop fills in
  from the feature store and the tokenizer, so one preset serves any store.
* ``forward(batch) -> PretrainingOutput``: the pretraining forward, ``loss`` and the named
  ``losses`` the loop logs and plots (whatever names the family uses).
* ``parameter_groups() -> {name: [parameters]}``: named groups that ``optim.lr_scales`` may
  scale (parameters in no group train at the base rate).

And the **capabilities** that tasks ask for (:data:`CAPABILITIES`). ``pair_scores`` is required;
the others are optional -- a family that lacks one simply does not define the method, and a task
that needs it fails at once with :class:`~actbert.errors.CapabilityError` naming the model and the
capability (:func:`require`):

=====================  =========================================================================
``pair_scores``        ``pair_scores(batch) -> [B]``: higher = row b's text describes row b's
                       video; ``pair_loss(batch, labels [B]) -> []`` trains it (labels 1 = match;
                       default: binary cross-entropy on the scores as logits).
``embeddings``         ``encode_text(batch) -> [B, D]`` and ``encode_video(batch) -> [B, D]``:
                       separate text and video embeddings in one space (bi-encoder retrieval).
``masked_tokens``      ``masked_token_logits(batch, positions [B, Lt] bool) -> [N, vocab]``: word
                       logits at the N marked text positions, row-major (fill-in-the-blank).
``unit_states``        ``unit_states(batch) -> (states [B, W, D], valid [B, W] bool)``: one state
                       per input unit (frame or clip) in order; ``unit_state_dim`` gives D
                       (segmentation).
``caption_memory``     ``caption_memory(batch) -> (memory [B, L, D], mask [B, L] bool)``: what a
                       caption decoder attends to; ``caption_memory_dim`` gives D, and
                       ``word_embeddings()`` (optional) a word table to start the decoder from.
``caption_generation`` ``caption_loss(batch) -> []`` (rows: a video part + its caption) and
                       ``generate_captions(batch, max_words, no_repeat_ngram=0) -> [[word-piece
                       ids]]`` (rows: a video part, no text; ``no_repeat_ngram``: the task's
                       setting): a model that captions by itself (VLM's generation mask); the
                       captioning task then trains and decodes with these, no decoder.
``factored_scores``    ``score_text(batch) -> [B, D]`` and ``score_video(batch) -> (vectors
                       [B, N, D], valid [B, N] bool)`` whose max dot product is ``pair_scores``
                       (below): a text x video score matrix from one pass per text and per video.
=====================  =========================================================================

A model whose pair scores come from a text part and a video part computed apart has the
``factored_scores`` capability: ``score_text(b) -> [B, D]`` and ``score_video(b) -> (vectors
[B, N, D], valid [B, N] bool)`` with ``pair_scores(b) == max over valid n of score_text(b) .
score_video(b)[n]`` (VLM: one pooled vector per video, the dot product; HERO: its frames, the max
frame cosine). A task that scores every text against every video (retrieval's ``score_matrix``)
then encodes each text and each video once, ``T + V`` passes instead of ``T x V``, and gets the
same scores (:func:`factored_similarity`).

A model whose capability depends on its configuration (ActBERT's ``embeddings`` exist only with
projection heads, ``embed_dim > 0``) defines ``has_capability(name) -> bool``; a capability whose
methods exist but that this hook denies counts as absent (:func:`capabilities_of`, :func:`require`).
The hook is asked on instances only: a class cannot know its configuration.

Batches come from the model's own processor; tasks never look inside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actbert.errors import CapabilityError
from actbert.models.pretrained import PretrainedModelMixin

# capability -> the methods a model defines to have it
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "pair_scores": ("pair_scores",),
    "embeddings": ("encode_text", "encode_video"),
    "masked_tokens": ("masked_token_logits",),
    "unit_states": ("unit_states",),
    "caption_memory": ("caption_memory",),
    "caption_generation": ("caption_loss", "generate_captions"),
    "factored_scores": ("score_text", "score_video"),
}


@dataclass
class PretrainingOutput:
    """What a model's pretraining forward returns (families may subclass it to add their logits)."""

    loss: torch.Tensor  # [] the weighted sum the optimiser minimises
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [] each, logged and plotted


class VideoTextModel(PretrainedModelMixin, nn.Module):
    """Base class of every registered model family (module docstring). ``save_pretrained`` /
    ``from_pretrained`` come from :class:`~actbert.models.pretrained.PretrainedModelMixin`."""

    config_class: type
    processor_class: type

    @classmethod
    def fill_config_from_data(cls, config: Any, schema: Any, tokenizer: Any) -> Any:
        """``config`` with the sizes the data decides (default: unchanged)."""
        return config

    @classmethod
    def random_corpus_dims(cls, config: Any) -> dict[str, int]:
        """Sizes for the generated corpus of ``data.random: true`` (keys of
        :class:`~actbert.data.random_features.RandomCorpusSpec`: ``action_dim``, ``region_dim``,
        ``num_actions``, ``num_region_classes``). Default: none, so the spec's own sizes are used
        and :meth:`fill_config_from_data` takes the model's sizes from the generated store."""
        return {}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups for ``optim.lr_scales`` (default: none)."""
        return {}

    def pair_loss(self, batch: Any, labels: torch.Tensor) -> torch.Tensor:
        """Loss that trains :meth:`pair_scores`; ``labels [B]`` float, 1 = the pair matches."""
        return F.binary_cross_entropy_with_logits(self.pair_scores(batch).float(), labels.float().to(device_of(self)))


def device_of(model: Any) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError, TypeError):
        return torch.device("cpu")


def model_name(model: Any) -> str:
    config = getattr(model, "config", None)
    arch = getattr(config, "architecture", None)
    return f"{arch!r} ({type(model).__name__})" if arch else type(model).__name__


def _missing_methods(model: Any, capability: str) -> list[str]:
    if capability not in CAPABILITIES:
        raise KeyError(f"unknown capability {capability!r}; known: {sorted(CAPABILITIES)}")
    missing = [m for m in CAPABILITIES[capability] if not callable(getattr(model, m, None))]
    hook = getattr(model, "has_capability", None)
    if not missing and not isinstance(model, type) and callable(hook) and not hook(capability):
        missing = [f"usable {' / '.join(CAPABILITIES[capability])}: switched off by the model's configuration"]
    return missing


def factorizes(model: Any) -> bool:
    """Whether ``model`` has the ``factored_scores`` capability (module docstring)."""
    return not _missing_methods(model, "factored_scores")


def factored_similarity(texts: torch.Tensor, videos: torch.Tensor, valid: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """``[T, V]``: max over each video's valid vectors of ``text . vector`` -- ``texts [T, D]``,
    ``videos [V, N, D]``, ``valid [V, N]`` bool (``factored_scores``; a video with none valid
    scores -inf). Videos go ``chunk`` at a time, so ``T x chunk x N`` products at most."""
    out = torch.empty(texts.shape[0], videos.shape[0], dtype=torch.float32)
    for a in range(0, videos.shape[0], chunk):
        part = torch.einsum("td,vnd->tvn", texts.float(), videos[a : a + chunk].float())
        out[:, a : a + chunk] = part.masked_fill(~valid[a : a + chunk].bool().unsqueeze(0), float("-inf")).amax(-1)
    return out


def capabilities_of(model: Any) -> frozenset[str]:
    """The capabilities a model (or model class) has: those whose methods it defines."""
    return frozenset(n for n in CAPABILITIES if not _missing_methods(model, n))


def require(model: Any, capabilities: Sequence[str], task: str) -> None:
    """Raise :class:`CapabilityError` unless ``model`` has every one of ``capabilities``."""
    for name in capabilities:
        missing = _missing_methods(model, name)
        if missing:
            raise CapabilityError(
                f"{task}: model {model_name(model)} lacks the capability {name!r} (no {', '.join(missing)}); "
                f"it has {sorted(capabilities_of(model))}"
            )


def parameter_groups_of(model: nn.Module) -> Mapping[str, list[nn.Parameter]]:
    inner = getattr(model, "module", model)  # DDP wraps the model
    groups = getattr(inner, "parameter_groups", None)
    return groups() if callable(groups) else {}


__all__ = [
    "CAPABILITIES",
    "PretrainingOutput",
    "VideoTextModel",
    "capabilities_of",
    "device_of",
    "factored_similarity",
    "factorizes",
    "model_name",
    "parameter_groups_of",
    "require",
]
