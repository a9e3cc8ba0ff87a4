"""The public API of workerfleet (group workerfleet.dev, version v1alpha1) as typed models.

The models are the single source of truth: `python -m workerfleet.api.crdgen` turns them into the
CRDs under crds/, and the operator parses every object it reads with them. This package stays pure
(no Kubernetes client, no network), so it can be imported anywhere.
"""
