"""Data: each dataset kind's sources and preprocessing (``mnist``, ``modelnet``, ``jets``), the
resumable checked downloads they share (``download``), the common split and fold files
(``splits``), per-fold input scaling (``scaling``) and the ``offline`` look-alike generators."""
