"""Layer 0, configuration: typed, frozen profiles loaded from ``params/<profile>.yaml``.

``from lsr_lib.config import load_config`` is the entry point; sections live in their modules
(``profiles``: data, encoder, LiT, extraction, evaluation, index; ``d2s``; ``suggest``).
"""

from .profiles import *  # noqa: F401,F403 (the public names of the profile loader)
from .profiles import PROFILES, REPO_ROOT, Config, ConfigError, load_config, split_profile, to_dict  # noqa: F401
