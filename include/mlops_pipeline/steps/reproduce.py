"""The task body of `<model>__reproduce`: rebuild a registered version from its lineage and prove
it is the same model (bit-identical holdout predictions, the same artifact sha256)."""

from __future__ import annotations

from typing import cast

from mlops_pipeline import layout
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import RunInfo, StepRejected, claim_evidence
from mlops_pipeline.steps.results import Reproduced
from mlops_pipeline.store import ObjectStore


def reproduce(spec: ModelSpec, store: ObjectStore, version: str, run: RunInfo) -> Reproduced:
    """Rebuild v`version` of the spec's model, write the report, tag the version with the outcome;
    refuse (naming the first difference) when the rebuild is not the same model."""
    from mlops_pipeline import registry
    from mlops_pipeline.reproduction import reproduce_version

    client = registry.configured_client()
    claim_evidence(store, run, layout.reports_prefix(spec.name, run.dag_run_id))
    try:
        report = reproduce_version(client, store, spec.name, version)
    except registry.RegistryError as exc:
        raise StepRejected(str(exc)) from exc
    key = layout.reproduction_report_key(spec.name, run.dag_run_id)
    store.write_bytes(key, report.to_json())
    outcome = "identical" if report.identical else "different"
    client.set_model_version_tag(spec.name, version, "reproduction", outcome)
    client.set_model_version_tag(spec.name, version, "reproduction_report_uri", store.uri(key))
    if not report.identical:
        raise StepRejected(
            f"{spec.name} v{version} could not be reproduced exactly: {report.first_difference}. "
            f"Report: {store.uri(key)}"
        )
    return cast(
        Reproduced,
        {
            "version": version,
            "identical": True,
            "report_uri": store.uri(key),
            "checks": [check.detail for check in report.checks],
            "environment_differences": report.environment_differences,
        },
    )
