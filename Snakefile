# mixlib: mixture-model clustering experiments. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/init.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/em.smk"
include: "rules/tracking.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
