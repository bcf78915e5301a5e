"""Layer 8, the catalog: every stage output declared once, with its folder, producer and verified reader.

Stages write through these declarations and read their inputs only through them, so no stage
imports another stage's module, and every read is checked against the writer's manifest.
"""

from .catalog import *  # noqa: F401,F403
