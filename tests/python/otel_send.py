"""A foreign sender: the OpenTelemetry Python SDK exporting metrics to vigil-collector.

Sends, through the SDK's own OTLP exporters:
  over gRPC:  gauge   sdk.grpc.memory.usage  (unit By)        = --value
  over HTTP:  gauge   sdk.http.temperature   (unit Cel)       = --value + 0.5
              counter sdk.http.requests      (unit {request}) = 7
each with data point attributes {"queue": "default", "http.route": "/v1/x"}. Resources:
  gRPC: Resource.create (the SDK's detectors) with service.name=vigil-e2e-sdk,
        host.name=--host-grpc, service.instance.id=--instance-grpc;
  HTTP: a bare Resource with only service.name=vigil-e2e-sdk and host.name=--host-http
        (no service.instance.id, so Prometheus's rules fall back to host.name).

Exits 0 only when every export the SDK attempted succeeded (the exporters log and
retry rather than raise, so each export's result is recorded here).
"""

import argparse
import sys

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpExporter,
)
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from grpc import Compression as GrpcCompression


class Recording(MetricExporter):
    """Delegates to a real exporter and remembers every result."""

    def __init__(self, inner, name):
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.name = name
        self.results = []

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.results.append(result)
        return result

    def force_flush(self, timeout_millis=10_000):
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis=30_000, **kwargs):
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


ATTRIBUTES = {"queue": "default", "http.route": "/v1/x"}


def provider(exporter, resource):
    # A long interval: the explicit force_flush below does the one export that matters.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=600_000)
    return MeterProvider(resource=resource, metric_readers=[reader])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", required=True, help="host:port of OTLP/gRPC")
    parser.add_argument("--http", required=True, help="host:port of OTLP/HTTP")
    parser.add_argument("--token", required=True)
    parser.add_argument("--value", type=float, required=True)
    parser.add_argument("--host-grpc", required=True)
    parser.add_argument("--host-http", required=True)
    parser.add_argument("--instance-grpc", required=True)
    args = parser.parse_args()
    auth = {"authorization": f"Bearer {args.token}"}

    grpc = Recording(
        GrpcExporter(
            endpoint=f"http://{args.grpc}",
            insecure=True,
            headers=auth,
            compression=GrpcCompression.Gzip,
            timeout=10,
        ),
        "grpc",
    )
    http = Recording(
        HttpExporter(
            endpoint=f"http://{args.http}/v1/metrics",
            headers=auth,
            compression=HttpCompression.Gzip,
            timeout=10,
        ),
        "http",
    )
    grpc_provider = provider(
        grpc,
        Resource.create(
            {
                "service.name": "vigil-e2e-sdk",
                "host.name": args.host_grpc,
                "service.instance.id": args.instance_grpc,
            }
        ),
    )
    http_provider = provider(
        http, Resource({"service.name": "vigil-e2e-sdk", "host.name": args.host_http})
    )

    def memory(_options: CallbackOptions):
        return [Observation(args.value, ATTRIBUTES)]

    def temperature(_options: CallbackOptions):
        return [Observation(args.value + 0.5, ATTRIBUTES)]

    grpc_provider.get_meter("vigil-e2e").create_observable_gauge(
        "sdk.grpc.memory.usage", callbacks=[memory], unit="By", description="bytes in use"
    )
    http_meter = http_provider.get_meter("vigil-e2e")
    http_meter.create_observable_gauge(
        "sdk.http.temperature", callbacks=[temperature], unit="Cel", description="a temperature"
    )
    http_meter.create_counter(
        "sdk.http.requests", unit="{request}", description="requests served"
    ).add(7, ATTRIBUTES)

    ok = True
    for name, prov, exporter in (("grpc", grpc_provider, grpc), ("http", http_provider, http)):
        prov.force_flush(timeout_millis=15_000)
        prov.shutdown()
        results = [r.name for r in exporter.results]
        print(f"{name}: export results {results}", flush=True)
        if not exporter.results or any(r != MetricExportResult.SUCCESS for r in exporter.results):
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
