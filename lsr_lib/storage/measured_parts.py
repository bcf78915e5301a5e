"""Parts of a stage measured once per input: a rerun with the same code, environment, config and inputs reuses them.

Stage 04 measures several things that take minutes each (every test caption through every index, the
pruning sweep, the engines' latency on the test split) before the scale benchmark that ``make bench``
adds. Rerunning the stage for the benchmark (``--force --bench``) used to measure them all again. Each
part is now written to ``<folder>/<name>.json`` with the digest of the stage's input record
(``lsr_lib.artifacts.stage_inputs``: code and environment fingerprints, config, input content ids) and
read back while that record is unchanged; any change (one token of the closure's code, a config value,
a rebuilt input) measures it again. A part that cannot be read (truncated, hand-edited JSON) is measured
again with a notice. To measure everything afresh on purpose, delete the folder. The files hold no time
stamp, so they can be committed beside the stage's results (stage 04 keeps them in
``results/<profile>/04_measured/``): a fresh clone's ``make bench`` then reads them instead of measuring
the test split again, while its code, environment, config and inputs are those they were measured on.

Values are JSON: lists and dicts of numbers, strings, None and NaN (tuples come back as lists).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .atomic import atomic_write_text
from .manifest import digest
from .progress import notice


def measured_once(folder: str | Path, name: str, inputs: dict, measure: Callable[[], Any]) -> Any:
    """``measure()``, or its stored value when it was measured on these ``inputs``."""
    path = Path(folder) / f"{name}.json"
    key = digest(inputs)
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            if stored["inputs"] == key:
                notice(f"{name}: reused from {path} (measured on these inputs)")
                return stored["value"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            notice(f"{path}: unreadable ({err}); measured again")
    value = measure()
    # no time stamp: the file changes only when the inputs or the values do (the folder may be committed)
    text = json.dumps({"inputs": key, "value": value}, sort_keys=True, indent=1, default=_plain)
    atomic_write_text(path, text + "\n")
    return json.loads(text)["value"]  # what a reuse returns, so both paths give the same values and types


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists; anything else JSON cannot hold is an error."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"a measured part holds {type(obj).__name__}, which JSON cannot store: {obj!r}")
