"""Distillation: the KD loss and its building blocks (``losses``) and the recipes, one object
each, with the variants a config runs (``recipes``)."""
