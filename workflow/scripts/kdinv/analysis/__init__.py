"""Analysis of a finished run, from the collected metric table and the checkpoints: ``tables``
(the collected metric table, its checks and the per-row tables), ``figures`` (Figure 1, the
trade-off figure, the measures figure), ``curves`` (training curves), ``stats`` (fold-paired
intervals, the tests behind the verdict rules, Holm's correction), ``claims`` (one object per
claim and its rule) and ``findings`` (the findings table and its reports)."""
