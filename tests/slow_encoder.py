"""An encoder plugin for the kill test: the tiny encoder, slowed down so a run can be killed midway."""

import time

from shoplens.encoders import register
from shoplens.encoders.tiny import TinyEncoder


class SlowTiny(TinyEncoder):
    name = "tiny"  # same vectors and name as `tiny`, so a normal re-run continues the same index

    def embed_batch(self, images):
        time.sleep(0.15)
        return super().embed_batch(images)


register("slow-tiny", "tiny, 0.15 s per batch; for the SIGKILL test")(lambda **_: SlowTiny())
