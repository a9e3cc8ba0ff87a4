"""The local dev environment: control plane, its fixtures, the demo, the loss checker."""
