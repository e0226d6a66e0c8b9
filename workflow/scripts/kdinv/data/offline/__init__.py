"""Source ``offline`` of each dataset kind: small, seeded look-alikes in the real file formats, for
the demo and CI (``mnist``: scikit-learn's digits as IDX files; ``modelnet``: parametric shapes as
OFF meshes; ``jets``: one-, two- and three-prong jets as h5 files)."""
