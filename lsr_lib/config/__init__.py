"""Layer 0, configuration: typed, frozen profiles loaded from ``params/<profile>.yaml``.

``from lsr_lib.config.profiles import load_config`` is the entry point; sections live in their modules
(``profiles``: data, encoder, LiT, extraction, evaluation, index; ``d2s``; ``suggest``).

This file imports nothing: a module that needs only one section (the D2S trainer needs ``config.d2s``) then
does not have ``profiles`` in its code fingerprint (lsr_lib.storage.code_fingerprint), so adding a config key
for stage 04 does not retrain stage 02's models.
"""
