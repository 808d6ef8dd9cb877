//! Shipping to the collector: an on-disk spool and the OTLP/gRPC client that drains it.
