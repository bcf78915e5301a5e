"""The artifact contract between stages: fingerprints, checksums and one reuse rule.

An artifact is a folder a stage writes. Its ``manifest.json`` is written last and records

- ``fingerprint``: a digest of what made it (the config section, the stage's code version and
  the *content ids* of its inputs), with the readable parts under ``about``;
- ``files``: the SHA-256 and size of every file in it;
- ``content``: a digest of those checksums, the id that downstream fingerprints include, so a
  changed upstream file changes every downstream fingerprint.

:meth:`Artifact.status` says ``ok``, ``missing``, ``stale`` (made by another config, code or
input) or ``corrupt`` (a file missing, truncated or changed). The one reuse rule,
:func:`build_or_reuse`: ``ok`` is reused, anything else is rebuilt, under the folder's lock.
Readers call :meth:`Artifact.verify`, which raises :class:`ArtifactError` naming the file and
the stage whose rerun rebuilds it. Nothing is decided by modification times or by existence.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from .progress import notice, report
from .atomic import atomic_write_json, folder_lock
from .code_fingerprint import explain_change

MANIFEST = "manifest.json"


class ArtifactError(FileNotFoundError):
    """No usable artifact: missing, stale or corrupt; the message names the file and the rerun that fixes it."""


def digest(obj) -> str:
    """Short SHA-256 of canonical JSON (sorted keys; tuples as lists)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> dict:
    """Checksum and size of one file."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


# Files whose full SHA-256 matched in this process, keyed by what a write changes (size, mtime, inode):
# one pipeline run checks a file its stages share once, and a file rewritten since is checked again.
_VERIFIED: set[tuple] = set()


def check_file(root: Path, rel: str, rec: dict) -> Optional[str]:
    """None when ``root/rel`` matches its record (size, then full SHA-256), else what is wrong with it."""
    p = root / rel
    if not p.is_file():
        return f"{p} is missing"
    st = p.stat()
    if st.st_size != rec["bytes"]:
        return f"{p} has {st.st_size} bytes where its manifest says {rec['bytes']} (truncated or overwritten)"
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, rec["sha256"])
    if key in _VERIFIED:
        return None
    if sha256_file(p) != rec["sha256"]:
        return f"{p} does not match its checksum (changed or corrupted after it was written)"
    _VERIFIED.add(key)
    return None


def diff_about(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Readable differences between two ``about`` dicts (``key: was X, now Y``)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_about(a, b, f"{prefix}{k}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{prefix}{k}: was {str(a)[:60]}, now {str(b)[:60]}")
    return out


def describe_change(old: dict, new: dict, limit: int = 3) -> str:
    """Why fingerprint ``new`` differs from the recorded ``about`` ``old``: changed code files and packages first, then
    settings."""
    new = json.loads(json.dumps(new, default=str))
    reasons = explain_change(old, new) + diff_about(
        {k: v for k, v in old.items() if k not in ("code", "env")},
        {k: v for k, v in new.items() if k not in ("code", "env")},
    )
    more = f" (+{len(reasons) - limit} more)" if len(reasons) > limit else ""
    return "; ".join(reasons[:limit]) + more if reasons else "another fingerprint"


MANIFEST_KEYS = {"fingerprint": str, "files": dict, "content": str}


def content_of(files: dict) -> str:
    """The content id of an artifact: a digest of its files' checksums (``{name: {"sha256", "bytes"}}``)."""
    return digest({k: v["sha256"] for k, v in files.items()})


def manifest_problem(m: dict) -> Optional[str]:
    """None for a manifest with every key a finished artifact needs, else what is missing or malformed."""
    for key, kind in MANIFEST_KEYS.items():
        if not isinstance(m.get(key), kind):
            return f"its {MANIFEST} has no valid {key!r} (damaged or hand-edited)"
    for rel, rec in m["files"].items():
        if not (isinstance(rec, dict) and isinstance(rec.get("sha256"), str) and isinstance(rec.get("bytes"), int)):
            return f"its {MANIFEST} has no valid record for {rel}"
    if m["content"] != content_of(m["files"]):
        return f"its {MANIFEST} lists files whose checksums do not give its 'content' id (damaged or hand-edited)"
    return None


@dataclass(frozen=True)
class Status:
    """What :meth:`Artifact.status` found: ``state`` in ok / missing / stale / corrupt, and why."""

    state: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when the artifact can be reused as it is."""
        return self.state == "ok"


class Artifact:
    """One stage output folder with a manifest; ``producer`` names the stage that rebuilds it."""

    def __init__(self, root: str | Path, name: str, producer: str) -> None:
        self.root, self.name, self.producer = Path(root), name, producer

    def __repr__(self) -> str:
        return f"Artifact({self.name!r}, {self.root})"

    def manifest(self) -> Optional[dict]:
        """The manifest, or None when there is none (or it is unreadable)."""
        try:
            return json.loads((self.root / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def status(self, fingerprint: Optional[dict] = None) -> Status:
        """ok / missing / stale (``fingerprint`` differs) / corrupt (a file fails its checksum)."""
        m = self.manifest()
        if m is None or not isinstance(m, dict) or not m.get("complete", True):
            return Status(
                "missing", f"{self.root / MANIFEST} does not exist" if m is None else "the last build did not finish"
            )
        if problem := manifest_problem(m):
            return Status("corrupt", f"{self.root}: {problem}")
        if fingerprint is not None and m.get("fingerprint") != digest(fingerprint):
            about = m.get("about") if isinstance(m.get("about"), dict) else {}
            return Status("stale", describe_change(about, fingerprint))
        for rel, rec in sorted(m.get("files", {}).items()):
            problem = check_file(self.root, rel, rec)
            if problem:
                return Status("corrupt", problem)
        return Status("ok")

    def verify(self, fingerprint: Optional[dict] = None) -> dict:
        """The manifest of a sound artifact; else :class:`ArtifactError` naming the file and the fix."""
        st = self.status(fingerprint)
        if not st.ok:
            raise ArtifactError(
                f"{self.name} ({self.root}) is {st.state}: {st.reason}. Rerun {self.producer}: it rebuilds what is "
                "missing, stale or corrupt and reuses the rest."
            )
        return self.manifest()

    def content_id(self) -> str:
        """The id downstream fingerprints include (a digest of every file's checksum); verifies first."""
        return self.verify()["content"]

    def invalidate(self) -> None:
        """Remove the manifest, so a half-rebuilt folder is never taken for a finished one."""
        try:
            os.remove(self.root / MANIFEST)
        except FileNotFoundError:
            pass

    def commit(self, fingerprint: dict, files: Iterable[str], meta: Optional[dict] = None) -> dict:
        """Checksum ``files`` (relative to the folder) and write the manifest, last."""
        recs = {rel: file_record(self.root / rel) for rel in sorted(set(files))}
        m = {
            "name": self.name,
            "fingerprint": digest(fingerprint),
            "about": fingerprint,
            "files": recs,
            "content": content_of(recs),
            "meta": meta or {},
            "complete": True,
        }
        atomic_write_json(self.root / MANIFEST, m)
        return json.loads(json.dumps(m, default=str))


def build_or_reuse(
    art: Artifact,
    fingerprint: dict,
    build: Callable[[Path], tuple[Iterable[str], dict]],
    log: Callable[[str], None] | None = None,
) -> tuple[dict, bool]:
    """The one reuse rule: reuse an ``ok`` artifact, else ``build(folder) -> (files, meta)`` and commit it.

    Runs under the folder's lock, so a concurrent run waits and then reuses this one's work.
    Returns (manifest, built).
    """
    warn = log or notice  # a stale or corrupt artifact being rebuilt reaches the pipeline's terminal
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    with folder_lock(art.root, art.name, notice):
        st = art.status(fingerprint)
        if st.ok:
            log(f"{art.name}: up to date ({art.root})")
            report(f"{art.name}: up to date, reused")
            return art.manifest(), False
        if st.state != "missing":
            warn(f"{art.name}: {st.state} ({st.reason}); rebuilding")
        report(f"{art.name}: building" + ("" if st.state == "missing" else f" ({st.state})"))
        art.invalidate()
        files, meta = build(art.root)
        return art.commit(fingerprint, files, meta), True
