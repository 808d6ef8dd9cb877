//! OTLP conversions: the agent's metric families to OTLP, and OTLP from any sender to
//! Prometheus series (names normalised as Prometheus's own OTLP receiver does).
