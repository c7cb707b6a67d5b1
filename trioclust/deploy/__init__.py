"""Deployment: clusters made of the runtime's servers."""

from trioclust.deploy.local import LocalCluster

__all__ = ["LocalCluster"]
