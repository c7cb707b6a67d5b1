"""Deployment: clusters made of the runtime's servers."""

from trioclust.deploy.adaptive import Adaptive
from trioclust.deploy.cluster import Cluster
from trioclust.deploy.local import LocalCluster
from trioclust.deploy.slurm import SLURMCluster
from trioclust.deploy.ssh import SSHCluster

__all__ = ["Adaptive", "Cluster", "LocalCluster", "SLURMCluster", "SSHCluster"]
