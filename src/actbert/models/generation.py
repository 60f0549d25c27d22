"""Decoding constraints shared by every captioner: the task's decoder (``tasks/captioning.py``) and
a model that generates by itself (VLM's ``generate_captions``)."""

from __future__ import annotations

import torch


def repeated_ngrams(tokens: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """``[B, V]`` bool: the pieces that would make an n-gram occur twice in a row of ``tokens [B, t]``
    (whose position 0, the start token, is in no n-gram). ``n = 0``: none.

    Greedy decoding of a briefly fine-tuned captioner can fall into a loop ("carefully carefully
    ..."); banning these pieces (``no_repeat_ngram``) leaves the loop for the next-best piece. Greedy
    decoding with the ban gives the same caption wherever the caption without it repeats no n-gram."""
    mask = torch.zeros(tokens.shape[0], vocab_size, dtype=torch.bool)
    if n <= 0:
        return mask
    for i, row in enumerate(tokens[:, 1:].tolist()):
        prefix = row[len(row) - n + 1 :] if n > 1 else []
        for j in range(len(row) - n + 1):  # every earlier n-gram whose first n-1 pieces end this row
            if row[j : j + n - 1] == prefix:
                mask[i, row[j + n - 1]] = True
    return mask


__all__ = ["repeated_ngrams"]
