"""mlops_pipeline: the domain library behind the Airflow DAGs.

Pure, typed functions for each step of a tabular model's life (ingest, validate, train,
evaluate, promote) and adapters for storage, MLflow, Great Expectations and Evidently at the
edges. Nothing here imports Airflow except :mod:`mlops_pipeline.airflow_glue`.
"""

__version__ = "0.1.0"
