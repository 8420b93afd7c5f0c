"""A production monitor daemon: probes, Prometheus metrics, GitHub incident issues, SLOs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fly-monitor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
