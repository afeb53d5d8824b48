"""Prometheus remote-write 1.0 messages (WriteRequest), generated from remote.proto here."""
