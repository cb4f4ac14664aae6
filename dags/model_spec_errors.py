"""Reports invalid model specs as one Airflow DAG import error.

`model_dags.py` builds the DAGs of every valid spec and skips the invalid ones; this file raises
for the invalid ones, so the Airflow UI shows an import error naming each bad file, the field and
the problem, while the other models' DAGs keep running. It defines no DAG itself.
"""

from __future__ import annotations

from mlops_pipeline.spec import SpecError, default_models_dir, load_specs

_errors = load_specs(default_models_dir()).errors
if _errors:
    raise SpecError("\n\n".join(_errors[path] for path in sorted(_errors)))
