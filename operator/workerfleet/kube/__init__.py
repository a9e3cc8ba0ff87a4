"""Kubernetes API access: the only package that reads or writes cluster objects."""
