# kdinv: "Knowledge Distillation for Teaching Symmetry Invariances", end to end.
#
# Path grammar (every wildcard is a config name or number). The run folders' templates, and what
# each wildcard fills in the metric table, are declared once in workflow/scripts/kdinv/paths.py:
#
#   resources/{dataset}/raw/<official file names>                          fetch_mnist
#   results/{dataset}/data/{train,test}.pt                                 prepare_mnist
#   results/{dataset}/folds/fold{fold}.pt                                  make_folds
#   results/{dataset}/train/{model}/{augment}/fold{fold}/model.pt          train_model
#   results/{dataset}/train/{model}/{augment}/fold{fold}/train_logits.pt   train_model (teacher cache)
#   results/{dataset}/{method}/{teacher}/{teacher_augment}/{student}/T{temperature}/fold{fold}/model.pt
#                                                                          distill_student
#   results/{dataset}/evaluation/fold{fold}/trained.parquet, trained_test_logits.pt
#                                                                          evaluate_trained
#   results/{dataset}/evaluation/fold{fold}/{method}-T{temperature}.parquet
#                                                                          evaluate_distilled
#   results/metrics.parquet                                                collect_metrics
#   results/figures/figure1.{png,pdf}                                      plot_figure1
#   results/figures/tradeoff.{png,pdf}                                     plot_tradeoff
#   results/findings.{parquet,md,html}                                     write_findings
#   results/curves.parquet, results/figures/curves.{png,pdf}               plot_curves
#   results/tables/<row>.csv                                               write_row_tables
#   results/run_settings.yaml                                              write_run_settings
#   logs/{rule}/<the output's wildcard path>.log
#   logs/benchmarks/{rule}/<the output's wildcard path>.tsv
#
# {augment} is "plain" or a symmetry name (training on transformed data, e.g. "translation");
# {method} is "distill" for the paper's KD and "distill-<variant>" for a distillation recipe's
# variant (e.g. distill-plain_reverse); {temperature} is written in one spelling (4, not 4.0).


from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/cluster.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/distill.smk"
include: "rules/evaluate.smk"
include: "rules/plot.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        rules.plot_figure1.output,
        rules.plot_tradeoff.output,
        rules.plot_measures.output,
        rules.collect_metrics.output,
        rules.write_findings.output,
        rules.plot_curves.output,
        rules.write_row_tables.output,
        rules.write_run_settings.output,
