"""The central server: receives probe streams and exposes the state as Prometheus metrics."""
