"""mixlib: mixture-model clustering models and the pipeline helpers behind their experiments.

Models live in :mod:`mixlib.models` (a registry of scikit-learn style estimators); datasets in
:mod:`mixlib.data`; metrics in :mod:`mixlib.metrics`; initialisations in :mod:`mixlib.init`;
tables and figures in :mod:`mixlib.tables` and :mod:`mixlib.plots`; MLflow in
:mod:`mixlib.tracking`; the stage functions that the Snakemake scripts call in
:mod:`mixlib.pipeline`. Nothing here imports snakemake.
"""

__version__ = "0.1.0"
