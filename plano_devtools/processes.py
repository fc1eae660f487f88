"""Starting child programs that must not outlive the launcher."""

from __future__ import annotations

import shutil


def die_with_parent() -> list[str]:
    """A command prefix that makes the child get SIGTERM when the launcher dies, even by SIGKILL
    (PR_SET_PDEATHSIG set by util-linux's ``setpriv``, which then execs the program: same pid).

    Not a ``preexec_fn``: with one, Python runs its after-fork hooks in the child, and grpc's hook
    aborts a child forked while gRPC threads run ("epoll_wait error: Bad file descriptor", exit -6);
    without one, subprocess forks and execs without running any Python in the child. Without
    ``setpriv`` the child is only stopped by the launcher's own shutdown."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []
