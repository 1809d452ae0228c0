# The HTML report (`snakemake --report report.html`): a front page describing the workflow, its
# tables as HTML and the config that ran; the tables and figures below with their captions.


report: "../config/report/workflow.rst"


rule aggregate:
    input:
        records=init_records() + eval_records(),
    output:
        long=report(
            "results/tables/long.csv",
            caption="../config/report/table_long.rst",
            category="Tables",
            subcategory="All datasets",
            labels={"table": "long (one row per run)", "format": "csv"},
        ),
        summary=report(
            "results/tables/summary.csv",
            caption="../config/report/table_summary.rst",
            category="Tables",
            subcategory="All datasets",
            labels={"table": "summary (mean, std, n)", "format": "csv"},
        ),
        tables=[
            report(
                f,
                caption="../config/report/table_paper.rst",
                category="Tables",
                subcategory=Path(f).stem,
                labels={"table": Path(f).stem, "format": Path(f).suffix[1:]},
            )
            for f in table_outputs()
        ],
        figures=[
            report(
                f,
                caption="../config/report/metrics.rst",
                category="Metrics by method",
            )
            for f in figure_outputs()
        ],
        paper=[
            report(
                f,
                caption="../config/report/table_paper.rst",
                category="Tables",
                subcategory="All datasets",
                labels={
                    "table": "all datasets (paper layout)",
                    "format": Path(f).suffix[1:],
                },
            )
            for f in PAPER_TABLE
        ],
    log:
        "results/logs/aggregate/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate/aggregate.tsv"
    threads: 1
    params:
        datasets=PLAN.datasets,
        reference_csv=reference_csv(),
        tables=dataset_tables(),
        figures=dataset_figures(),
        invocation=INVOCATION,
        benchmarks=job_benchmarks(),
        train_infos=train_infos(),
    script:
        "../workflow_scripts/aggregate.py"


if PLAN.publish_dir:

    rule publish_tables:
        input:
            list(publish_map().values()),
        output:
            list(publish_map()),
        log:
            "results/logs/publish_tables/publish_tables.log",
        threads: 1
        script:
            "../workflow_scripts/publish_tables.py"


rule make_sweep_table:
    input:
        records=sweep_records,
    output:
        md="results/tables/sweeps/{dataset}/{model}/{param}.md",
        tex="results/tables/sweeps/{dataset}/{model}/{param}.tex",
        csv="results/tables/sweeps/{dataset}/{model}/{param}.csv",
        figure=report(
            "results/figures/sweeps/{dataset}/{model}/{param}.png",
            caption="../config/report/sweep.rst",
            category="Sweeps",
        ),
    log:
        "results/logs/make_sweep_table/{dataset}/{model}/{param}.log",
    benchmark:
        "results/benchmarks/make_sweep_table/{dataset}/{model}/{param}.tsv"
    threads: 1
    params:
        values=sweep_values,
        fixed=sweep_fixed,
        invocation=INVOCATION,
        benchmarks=sweep_benchmarks,
        own_benchmarks=sweep_own_benchmarks,
        train_infos=sweep_infos,
    script:
        "../workflow_scripts/make_sweep_table.py"
