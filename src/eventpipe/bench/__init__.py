"""`eventpipe bench`: throughput, latency, API and cost figures, taken as ratios in one run."""

# In the order they run; `eventpipe bench --only` picks among them.
SCENARIOS = ("drain", "scale", "latency", "api")
