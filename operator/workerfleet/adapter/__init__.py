"""The external metrics API (external.metrics.k8s.io) that feeds each pool's queue depth to its HPA."""
