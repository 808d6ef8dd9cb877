"""A foreign sender of logs: Python's logging through the OpenTelemetry SDK's
LoggingHandler and its OTLP log exporters (gRPC and HTTP) to vigil-collector.

Sends, with --marker M:
  over gRPC: logging.error("sdk grpc M disk full on /scratch", extra={"job.id": "j-42"})
             from a resource with host.name=--host-grpc
  over HTTP: logging.warning("sdk http M slow allreduce") from host.name=--host-http
Exits 0 only when every export the SDK attempted succeeded.
"""

import argparse
import logging
import sys

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpExporter,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource


class Recording(LogRecordExporter):
    """Delegates to a real exporter and remembers every result."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, batch):
        result = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30_000):
        return True


def send(exporter, host, level, message, extra):
    recording = Recording(exporter)
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "vigil-e2e-sdk-logs", "host.name": host})
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(recording))
    logger = logging.getLogger(f"vigil-e2e-{host}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger.addHandler(handler)
    logger.log(level, message, extra=extra)
    provider.shutdown()
    logger.removeHandler(handler)
    return recording.results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", required=True, help="host:port of OTLP/gRPC")
    parser.add_argument("--http", required=True, help="host:port of OTLP/HTTP")
    parser.add_argument("--token", required=True)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--host-grpc", required=True)
    parser.add_argument("--host-http", required=True)
    args = parser.parse_args()
    auth = {"authorization": f"Bearer {args.token}"}

    results = send(
        GrpcExporter(endpoint=f"http://{args.grpc}", insecure=True, headers=auth),
        args.host_grpc,
        logging.ERROR,
        f"sdk grpc {args.marker} disk full on /scratch",
        {"job.id": "j-42"},
    )
    results += send(
        HttpExporter(endpoint=f"http://{args.http}/v1/logs", headers=auth),
        args.host_http,
        logging.WARNING,
        f"sdk http {args.marker} slow allreduce",
        {},
    )
    print("export results:", [r.name for r in results])
    if len(results) != 2 or any(r.name != "SUCCESS" for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
