"""Saved models read back: checked loading, evaluation and figures."""
