"""courierwatch: can the Apple devices at this site reach Apple?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("courierwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
