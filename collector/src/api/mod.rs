//! The collector's HTTP API: Prometheus's query API evaluated by vigil-rules' engine.
