from mixlib.pipeline import publish, run_job

run_job(snakemake, publish, sources=list(snakemake.input), targets=list(snakemake.output))
