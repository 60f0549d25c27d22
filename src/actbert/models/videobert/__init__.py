"""VideoBERT (Sun et al., ICCV 2019): one BERT over WordPiece + visual words (docs/videobert.md)."""
