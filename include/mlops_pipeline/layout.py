"""Where each run's outputs live in the object store: the one place that knows the key layout.

```
validation/<model>/<run>/   GX result, summary, Data Docs, clean rows
quarantine/<model>/<run>/   rejected rows + reason
reports/<model>/<run>/      gate report (JSON + HTML)
```
`<run>` is the Airflow run id made safe for keys, so the UI plugin can find a run's reports from
the run id alone, even when the task that wrote them failed (a refused batch, a failed gate).
"""

from __future__ import annotations

from mlops_pipeline.store import safe_segment


def validation_prefix(model: str, run_id: str) -> str:
    """One run's validation outputs."""
    return f"validation/{model}/{safe_segment(run_id)}"


def quarantine_prefix(model: str, run_id: str) -> str:
    """One run's quarantined rows and the reason."""
    return f"quarantine/{model}/{safe_segment(run_id)}"


def reports_prefix(model: str, run_id: str) -> str:
    """One run's reports."""
    return f"reports/{model}/{safe_segment(run_id)}"


def data_docs_key(model: str, run_id: str) -> str:
    """The GX Data Docs page of one run's validation."""
    return f"{validation_prefix(model, run_id)}/data_docs/index.html"


def gate_report_key(model: str, run_id: str, extension: str = "html") -> str:
    """One run's gate report, `html` or `json`."""
    return f"{reports_prefix(model, run_id)}/gate_report.{extension}"
