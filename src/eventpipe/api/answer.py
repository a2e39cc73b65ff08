"""JSON answers as the routes hand them to the server, a large one in memory of its own.

A page of up to 8 MiB (store.query.PAGE_BYTES) is made in a pool thread from
rows several times its size. glibc's malloc serves a block that large from
the thread's heap once one like it has been freed (its mmap threshold follows
the largest mapping freed, up to 32 MiB), so the finished body lands on top
of the rows just freed, and the heap cannot give those back to the system
until the body goes too, which is when its client has read it. An attack
found it: a client that read nothing of an 8 MiB /feed page held about 47 MiB
of the API's memory, eight of one key 380 MiB. A body past LARGE_BYTES is
copied into an anonymous mapping of its own and the heap's copy freed at
once, so an unread answer holds its own size; a memcpy of 8 MiB costs about a
millisecond. Setting glibc's threshold for the whole process (mallopt) would
do the same, but also for the embedded engine's column buffers, which reuse
the heap's blocks between queries.
"""

from __future__ import annotations

import mmap

from fastapi import Response

# Smaller bodies are not worth a mapping: an unread one holds at most a few times this.
LARGE_BYTES = 1024 * 1024


def json_answer(body: bytes) -> Response:
    """`body` (JSON) as the Response; give it the only reference, so that a large one's heap copy goes."""
    if len(body) <= LARGE_BYTES:
        return Response(body, media_type="application/json")
    mapped = mmap.mmap(-1, len(body))
    mapped.write(body)
    del body
    # Starlette sends a memoryview as it is, and api.flight slices it without copying; the mapping is
    # unmapped once the last slice is gone.
    return Response(memoryview(mapped), media_type="application/json")
