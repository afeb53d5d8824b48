"""The one-shot readiness report of `courierwatch check`: run every check once, judge, print."""
