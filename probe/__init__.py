"""The site daemon: measures Apple endpoints on a schedule and ships the results."""
