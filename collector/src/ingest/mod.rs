//! OTLP receivers (gRPC and HTTP), their authentication and limits, and the path from
//! a decoded request into the store.
