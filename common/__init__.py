"""What probe/ and collector/ both use: the config reader and the result vocabulary.

This room imports neither probe/ nor collector/, and nothing of the command line above them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("courierwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
