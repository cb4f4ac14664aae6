"""mlops_pipeline: the library behind the Airflow DAGs, in three layers.

* The domain (`spec`, `store`, `layout`, `ingest`, `validation`, `rules`, `training`, `evaluation`,
  `registry`, `scoring`, `predictions`, `drift`, `monitoring`): pure, typed functions and small
  result objects for each step of a tabular model's life, with adapters for storage, MLflow, Great
  Expectations and Evidently at the edges.
* `steps`: the task bodies, one module per DAG kind, orchestrator-free.
* `airflow_glue`: the only module that imports Airflow.

`devtools` (the `mlops` command, the local stacks, the example data) sits beside them and is never
imported by the DAG files or the plugin.
"""

__version__ = "0.1.0"
