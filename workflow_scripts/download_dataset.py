from pathlib import Path

from mixlib.pipeline import download_dataset, run_job

run_job(
    snakemake,
    download_dataset,
    source=snakemake.wildcards.source,
    out_dir=str(Path(snakemake.output.raw).parent),
    staged_dir=snakemake.params.staged_dir,
    download=snakemake.params.download,
    file_sha256=dict(snakemake.params.file_sha256),
)
