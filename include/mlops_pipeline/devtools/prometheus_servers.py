"""Prometheus and its Pushgateway as local processes, for `make stack` and the tests.

The machine's own packages (Debian's `prometheus`, which brings `promtool`, and
`prometheus-pushgateway`), installed with apt-get when missing (:func:`ensure_debian_packages`),
started on free loopback ports with their data in the stack's folder, never as the machine's
services. Prometheus scrapes the Pushgateway (``honor_labels``: the job and model each run pushed
are kept) and loads the project's alerting rules, `deploy/prometheus/alerts.yml`, the same file
the compose stack's Prometheus loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mlops_pipeline.devtools.docker_engine import ensure_debian_packages
from mlops_pipeline.devtools.processes import (
    LOCALHOST,
    ServiceRecord,
    StackError,
    find_free_port,
    start_service,
    stop_service,
    wait_for_http,
)

# Command -> the Debian package that provides it.
PROMETHEUS_PACKAGES: Mapping[str, str] = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
}
PROMETHEUS, PUSHGATEWAY = "prometheus", "pushgateway"
ALERT_RULES = Path(__file__).resolve().parents[3] / "deploy/prometheus/alerts.yml"


@dataclass(frozen=True)
class PrometheusServers:
    """Where a started Prometheus and Pushgateway listen."""

    prometheus_url: str
    pushgateway_url: str

    def query(self, promql: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The instant vector of `promql` from Prometheus' HTTP API (`/api/v1/query`)."""
        response = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=timeout)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise StackError(f"Prometheus refused {promql!r}: {body}")
        return list(body["data"]["result"])


def prometheus_config(pushgateway: str, scrape_interval: str, rule_files: list[Path]) -> str:
    """Prometheus' configuration: scrape the Pushgateway at `pushgateway` (host:port), load `rule_files`."""
    import yaml

    return yaml.safe_dump(
        {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": "pushgateway",
                    # Keep the job and model labels each run pushed, not the scrape's own.
                    "honor_labels": True,
                    "static_configs": [{"targets": [pushgateway]}],
                }
            ],
        },
        sort_keys=False,
    )


def start_prometheus_servers(
    run_dir: Path, state_dir: Path, env: Mapping[str, str], scrape_interval: str = "2s"
) -> PrometheusServers:
    """Start the Pushgateway, then Prometheus scraping it; both recorded in `state_dir` (stop by name)."""
    ensure_debian_packages(PROMETHEUS_PACKAGES)
    gateway_port = find_free_port()
    prometheus_port = find_free_port(exclude=[gateway_port])
    data = run_dir / "prometheus"
    (data / "tsdb").mkdir(parents=True, exist_ok=True)
    logs = run_dir / "logs"
    gateway = start_service(
        PUSHGATEWAY,
        [
            "prometheus-pushgateway",
            f"--web.listen-address={LOCALHOST}:{gateway_port}",
            f"--persistence.file={data / 'pushgateway.data'}",
        ],
        env=env,
        state_dir=state_dir,
        log_file=logs / "pushgateway.log",
        details={"url": f"http://{LOCALHOST}:{gateway_port}"},
    )
    config = data / "prometheus.yml"
    config.write_text(prometheus_config(f"{LOCALHOST}:{gateway_port}", scrape_interval, [ALERT_RULES]))
    prometheus = start_service(
        PROMETHEUS,
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data / 'tsdb'}",
            f"--web.listen-address={LOCALHOST}:{prometheus_port}",
        ],
        env=env,
        state_dir=state_dir,
        log_file=logs / "prometheus.log",
        details={"url": f"http://{LOCALHOST}:{prometheus_port}"},
    )
    servers = PrometheusServers(f"http://{LOCALHOST}:{prometheus_port}", f"http://{LOCALHOST}:{gateway_port}")
    records: list[ServiceRecord] = [gateway, prometheus]
    wait_for_http(f"{servers.pushgateway_url}/-/ready", timeout=30, records=records, what="the Pushgateway")
    wait_for_http(f"{servers.prometheus_url}/-/ready", timeout=60, records=records, what="Prometheus")
    return servers


def stop_prometheus_servers(state_dir: Path) -> None:
    """Stop what :func:`start_prometheus_servers` started in `state_dir` (nothing if it is not running)."""
    for name in (PROMETHEUS, PUSHGATEWAY):
        stop_service(state_dir, name)
