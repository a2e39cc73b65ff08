"""What `eventpipe bench` plans to measure, from its flags."""

from __future__ import annotations

from eventpipe.bench.command import Plan
from eventpipe.cli.main import build_parser


def test_each_read_size_is_measured_once_smallest_first() -> None:
    """With --keep, `--sizes 5000,5000` refilled the kept store of the first run and measured it again
    under the same size, at twice the events."""
    plan = Plan.of(build_parser().parse_args(["bench", "--sizes", "60000,5000,60000,5000", "--keep"]))
    assert plan.sizes == (5_000, 60_000)
