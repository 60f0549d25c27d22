"""actbert: ActBERT (Zhu & Yang, CVPR 2020) in PyTorch.

Data flow (see README and docs/architecture.md):
raw video + narration -> video/ + text/ (features) -> data/ (feature store, samples, masking)
-> models/ (tangled transformer) -> train/ (pretraining) -> tasks/ + metrics/ (downstream results).
"""

__version__ = "0.1.0"
