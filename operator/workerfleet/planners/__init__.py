"""Pure planners: plain values in, plain values out; no kopf, no Kubernetes client, no network."""
