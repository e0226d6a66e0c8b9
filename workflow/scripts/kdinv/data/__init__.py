"""Data: each dataset kind described once (``kinds``), the one fetch and one prepare job that serve
every kind (``fetch``, ``prepare``), each kind's sources, reader and preprocessing (``mnist``,
``modelnet``, ``jets``), the resumable checked downloads they share (``download``), the common
split and fold files (``splits``), per-fold input scaling (``scaling``) and the ``offline``
look-alike generators."""
