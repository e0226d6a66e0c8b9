rule collect_metrics:
    input:
        evaluation_tables(),
    output:
        "results/metrics.parquet",
    log:
        "logs/collect_metrics/collect_metrics.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/collect_metrics.py"


rule plot_figure1:
    input:
        rules.collect_metrics.output,
    output:
        png=report(
            "results/figures/figure1.png",
            caption="../workflow/report/figure1.rst",
            category="Figure 1",
        ),
        pdf="results/figures/figure1.pdf",
    log:
        "logs/plot_figure1/plot_figure1.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        rows=figure_rows(),
        temperatures=[float(t) for t in TEMPERATURES],
    script:
        "../workflow/scripts/plot_figure1.py"


rule plot_tradeoff:
    input:
        rules.collect_metrics.output,
    output:
        png=report(
            "results/figures/tradeoff.png",
            caption="../workflow/report/tradeoff.rst",
            category="Invariance and accuracy",
        ),
        pdf="results/figures/tradeoff.pdf",
    log:
        "logs/plot_tradeoff/plot_tradeoff.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        rows=figure_rows(),
    script:
        "../workflow/scripts/plot_tradeoff.py"


rule plot_measures:
    input:
        rules.collect_metrics.output,
    output:
        png=report(
            "results/figures/measures.png",
            caption="../workflow/report/measures.rst",
            category="Invariance and accuracy",
        ),
        pdf="results/figures/measures.pdf",
    log:
        "logs/plot_measures/plot_measures.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        rows=figure_rows(),
    script:
        "../workflow/scripts/plot_measures.py"


# Whether the paper's claims hold on this run, from the collected table (fold-paired statistics).
rule write_findings:
    input:
        rules.collect_metrics.output,
    output:
        table="results/findings.parquet",
        markdown="results/findings.md",
        html=report(
            "results/findings.html",
            caption="../workflow/report/findings.rst",
            category="Findings",
        ),
    log:
        "logs/write_findings/write_findings.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        rows=lambda w: canonical(config["rows"]),
    script:
        "../workflow/scripts/write_findings.py"


# Loss and validation accuracy per epoch of every model, from the checkpoints' histories.
rule plot_curves:
    input:
        [f"{run}/model.pt" for run in trained_dirs() + distilled_dirs()],
    output:
        table="results/curves.parquet",
        png=report(
            "results/figures/curves.png",
            caption="../workflow/report/curves.rst",
            category="Training curves",
        ),
        pdf="results/figures/curves.pdf",
    log:
        "logs/plot_curves/plot_curves.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/plot_curves.py"


rule write_row_tables:
    input:
        rules.collect_metrics.output,
    output:
        report(
            directory("results/tables"),
            patterns=["{name}.csv"],
            caption="../workflow/report/tables.rst",
            category="Per-row tables",
        ),
    log:
        "logs/write_row_tables/write_row_tables.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        rows=lambda w: canonical(config["rows"]),
    script:
        "../workflow/scripts/write_row_tables.py"


rule write_run_settings:
    output:
        report(
            "results/run_settings.yaml",
            caption="../workflow/report/settings.rst",
            category="Run settings",
        ),
    log:
        "logs/write_run_settings/write_run_settings.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=lambda w: canonical(config),
    script:
        "../workflow/scripts/write_run_settings.py"
