"""The remote-write output: each applied result as samples at its own time, sent to a store.

encode: a result to the bytes of its TimeSeries; send: the bounded queue and the sender.
"""
