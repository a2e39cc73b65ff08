"""A dead letter's replay status, read from its outcomes (dead_letter_outcomes, written by store.outcome).

Replayed when an outcome says so, failed when only others exist, pending
without any. Each query reads the outcomes' ids and statuses, never a letter's
payload; the letters' pages and extents (store.page) take CONDITIONS as they
take a reason.
"""

from __future__ import annotations

STATUSES = ("pending", "failed", "replayed")
CONDITIONS = {
    "pending": "dead_letter_id NOT IN (SELECT dead_letter_id FROM dead_letter_outcomes)",
    "failed": "dead_letter_id IN (SELECT dead_letter_id FROM dead_letter_outcomes"
    " GROUP BY dead_letter_id HAVING max(status = 'replayed') = 0)",
    "replayed": "dead_letter_id IN (SELECT dead_letter_id FROM dead_letter_outcomes WHERE status = 'replayed')",
}
# (id, 1 if replayed else 0) of the letters among {ids} a replay tried: a few granules of the outcomes.
BY_IDS = (
    "SELECT dead_letter_id, max(status = 'replayed') FROM dead_letter_outcomes"
    " WHERE dead_letter_id IN {ids:Array(String)} GROUP BY dead_letter_id"
)
# Every stored letter by status (eventpipe_dead_letters_by_status): the letters'
# ids against their outcomes. An unmatched letter joins zeros (join_use_nulls is
# off by default), which is pending.
COUNTS = (
    "SELECT multiIf(replayed = 1, 'replayed', tried = 1, 'failed', 'pending') AS status, count()"
    " FROM (SELECT dead_letter_id FROM dead_letters FINAL) AS letters"
    " LEFT JOIN (SELECT dead_letter_id, max(status = 'replayed') AS replayed, 1 AS tried"
    " FROM dead_letter_outcomes GROUP BY dead_letter_id) AS outcomes USING dead_letter_id GROUP BY status"
)
