"""Models for the Slurm tests: jobs that die the way cluster jobs do (no Python error, no cleanup)."""

import os
import signal

from userpkg.models import PlainNet


class SelfKillNet(PlainNet):
    """SIGKILLs its own process on the first forward pass, like the kernel's OOM killer would."""

    def forward(self, x):
        os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)
