"""`eventpipe bench`: throughput, latency, API and cost figures, taken as ratios in one run."""
