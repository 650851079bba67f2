"""Role implementations for tests, loaded by import path
(``generator.impl = "tests.slow_roles:SlowGenerator"``)."""

import time

from roles.generator_hf import HfGenerator


class SlowGenerator(HfGenerator):
    """The real generator, slowed so a test can kill it mid-request."""

    def handle(self, msg):
        time.sleep(0.4)
        return super().handle(msg)
