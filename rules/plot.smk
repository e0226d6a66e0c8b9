rule collect_metrics:
    input:
        all_metric_tables(),
    output:
        "results/metrics.parquet",
    log:
        "logs/collect_metrics/collect_metrics.log",
    conda:
        "../envs/plot.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/collect_metrics.py"


rule plot_figure1:
    input:
        rules.collect_metrics.output,
    output:
        png="results/figures/figure1.png",
        pdf="results/figures/figure1.pdf",
    log:
        "logs/plot_figure1/plot_figure1.log",
    conda:
        "../envs/plot.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        rows=figure_rows(),
        temperatures=[float(t) for t in TEMPERATURES],
    script:
        "../workflow/scripts/plot_figure1.py"
