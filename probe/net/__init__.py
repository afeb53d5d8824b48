"""The network layer under the checks: DNS, connections, the proxy tunnel, SNTP.

Imports nothing from checks/: a check is built from these steps, never the other way.
"""
