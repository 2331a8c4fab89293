"""Schemathesis hooks for the OpenAPI check (loaded via SCHEMATHESIS_HOOKS).

A generated ``wait`` may be up to 30 s for a session that exists (schemathesis
links the sessions it creates); shorten the valid ones so the run stays bounded.
Invalid values (negative, not a number) are left alone: those are the point.
"""

import schemathesis

MAX_WAIT = 0.01


@schemathesis.hook
def map_query(ctx, query):
    wait = query.get("wait") if query else None
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > MAX_WAIT:
        query["wait"] = MAX_WAIT
    return query
