"""Distillation: the KD loss (``losses``)."""
