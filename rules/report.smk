rule aggregate:
    input:
        records=init_records() + eval_records(),
    output:
        long="results/tables/long.csv",
        summary="results/tables/summary.csv",
        tables=table_outputs(),
        figures=[
            report(
                f,
                caption="../config/report/metrics.rst",
                category="Metrics by method",
            )
            for f in figure_outputs()
        ],
    params:
        datasets=config["datasets"],
        reference_csv=reference_csv(),
    log:
        "results/logs/aggregate/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate/aggregate.tsv"
    threads: 1
    script:
        "../workflow_scripts/aggregate.py"
