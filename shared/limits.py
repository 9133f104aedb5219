"""Process limits that thousands of live sessions need."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

#: Open files wanted by a process holding many sockets: a worker holds one per
#: session (5,000 per box is the capacity goal), the sandbox one per client.
OPEN_FILES_WANTED = 65_536


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``wanted`` (never above the hard limit).

    Many systems start processes with a soft limit of 1,024, far below what
    one worker's sessions need; raising the soft limit needs no privilege.
    Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the open files limit from %d: %s", soft, e)
    return soft
