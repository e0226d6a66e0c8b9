"""Symmetries: the transformations a row's symmetry names (``transforms``)."""
