"""What a refused query becomes: one table from :class:`~infaas_core.actions.RejectKind` to
the results status (DESIGN.md, results schema) and to the HTTP code of the real server.

Both backends read these tables; neither looks at a rejection's message text.
"""

from __future__ import annotations

from types import MappingProxyType

from infaas_core.actions import RejectKind

RESULT_STATUS = MappingProxyType({
    RejectKind.INFEASIBLE: "rejected",  # no variant can satisfy it: not admitted, not a violation
    RejectKind.NO_CAPACITY: "dropped",  # admitted, refused for lack of room now: a violation
})

HTTP_STATUS = MappingProxyType({
    RejectKind.INFEASIBLE: 422,  # Unprocessable: the requirements cannot be met
    RejectKind.NO_CAPACITY: 503,  # Service Unavailable: overload, try again
})
