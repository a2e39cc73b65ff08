"""What a bounded read may spend, and which failures are the client's read passing it (422) or not."""

from __future__ import annotations

import time

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from eventpipe.errors import CostlyQueryError, HeavyReadError, StorageError
from eventpipe.store.bound import Bound

MIB = 1024 * 1024
# As chDB 26.9 words its query's limit (seen here), and as servers before it did.
QUERY_26 = "Code: 241. DB::Exception: Query memory limit exceeded: would use 198.77 MiB, maximum: 190.73 MiB"
QUERY_OLD = "Code: 241. DB::Exception: Memory limit (for query) exceeded: would use 33.61 GiB, maximum: 27.94 GiB"
TOTAL = "Code: 241. DB::Exception: (total) memory limit exceeded: would use 10.1 GiB, maximum: 10.0 GiB"
TOTAL_OLD = "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 10.1 GiB, maximum: 10.0 GiB"
USER = "Code: 241. DB::Exception: User memory limit exceeded: would use 2.1 GiB, maximum: 2.0 GiB"
USER_OLD = "Code: 241. DB::Exception: Memory limit (for user) exceeded: would use 5.1 GiB, maximum: 5.0 GiB"
TIMEOUT = "Code: 159. DB::Exception: Timeout exceeded: elapsed 10.0 seconds, maximum: 10"


def failure(message: str, code: int) -> StorageError:
    """A StorageError as store.failure.classified raises it, from the driver's error."""
    try:
        raise StorageError(message) from DatabaseError(message, code=code)
    except StorageError as exc:
        return exc


def test_both_bounds_are_settings_of_every_bounded_query_and_memory_alone_of_every_other() -> None:
    assert Bound(10.0, 512 * MIB).settings() == {"max_execution_time": 10.0, "max_memory_usage": 512 * MIB}
    assert Bound(10.0, 512 * MIB).always == {"max_memory_usage": 512 * MIB}
    assert Bound(None, 512 * MIB).settings() == {"max_memory_usage": 512 * MIB}
    assert Bound(10.0).settings() == {"max_execution_time": 10.0} and Bound(10.0).always == {}
    assert Bound(None).settings() == {} and Bound(None).deadline() is None


def test_a_read_of_several_queries_has_what_is_left_of_its_time_and_all_of_its_memory() -> None:
    bound = Bound(10.0, 256 * MIB)
    settings = bound.settings(time.monotonic() + 2.0)
    assert 1.9 <= settings["max_execution_time"] <= 2.0 and settings["max_memory_usage"] == 256 * MIB
    with pytest.raises(CostlyQueryError, match="past its 10 s bound"):
        bound.settings(time.monotonic())


@pytest.mark.parametrize("message", [QUERY_26, QUERY_OLD])
def test_the_querys_own_memory_limit_is_the_clients_read_and_says_how_to_narrow_it(message: str) -> None:
    costly = Bound(10.0, 512 * MIB).passed(failure(message, 241), narrowable=True)
    assert isinstance(costly, CostlyQueryError)
    assert "512 MiB memory bound" in str(costly) and "since and until" in str(costly)


def test_a_read_with_no_window_to_narrow_past_the_memory_bound_is_retried_later_not_narrowed() -> None:
    # The export's and the feed's windows: their cost is the parts a window meets, which merges bring down.
    heavy = Bound(10.0, 512 * MIB).passed(failure(QUERY_26, 241), narrowable=False)
    assert isinstance(heavy, HeavyReadError) and not isinstance(heavy, CostlyQueryError)
    assert "512 MiB" in str(heavy) and "retry later" in str(heavy)


@pytest.mark.parametrize("message", [TOTAL, TOTAL_OLD])
def test_the_servers_memory_limit_is_the_servers_state_not_the_read(message: str) -> None:
    # Full memory elsewhere passes: the read as it is may work in a minute, so it stays retryable (503).
    for narrowable in (True, False):
        assert Bound(10.0, 512 * MIB).passed(failure(message, 241), narrowable) is None


@pytest.mark.parametrize("message", [USER, USER_OLD])
def test_the_api_users_memory_limit_is_its_reads_at_once_and_any_read_waits_for_them(message: str) -> None:
    # compose's profile bounds the API's reads together (2 GiB): one key's eight at their bound fill it, and
    # then any read fails, however small. Retry later (503 busy, counted), not narrow it.
    for narrowable in (True, False):
        busy = Bound(10.0, 512 * MIB).passed(failure(message, 241), narrowable)
        assert isinstance(busy, HeavyReadError) and "retry later" in str(busy)


def test_without_a_memory_bound_no_memory_failure_is_the_clients() -> None:
    assert Bound(10.0).passed(failure(QUERY_26, 241), narrowable=True) is None


def test_a_timeout_is_the_clients_read_whoever_set_it_if_the_client_can_narrow_it() -> None:
    assert "past its 10 s bound" in str(Bound(10.0).passed(failure(TIMEOUT, 159), narrowable=True))
    # A server profile's max_execution_time on a read the API bounds: narrowing it still helps.
    assert "past the server's time bound" in str(Bound(None).passed(failure(TIMEOUT, 159), narrowable=True))
    # On one the API does not bound, it is the server's limit: 503, as before.
    assert Bound(10.0).passed(failure(TIMEOUT, 159), narrowable=False) is None


def test_other_failures_are_not_the_clients() -> None:
    refused = failure("Code: 210. DB::NetException: Connection refused", 210)
    assert Bound(10.0, 512 * MIB).passed(refused, narrowable=True) is None
    assert Bound(10.0, 512 * MIB).passed(StorageError("no cause"), narrowable=True) is None
