"""Symmetries: the transformations a row's symmetry names, for augmentation and the invariance
metric, with the finite groups' actions (``transforms``); what each acts on and its group order
or frame size, without torch (``catalog``); the PCA frames of point clouds over which a model is
averaged for the continuous rotations (``frames``); and the other measures of invariance, the
orbit gap and the Lie derivative with their random controls (``measures``)."""
