"""Analysis of a finished run, from the collected metric table and the checkpoints: ``tables``
(collection and per-row tables), ``figures`` (Figure 1), ``curves`` (training curves) and
``findings`` (fold-paired statistics and the verdicts on the paper's claims)."""
