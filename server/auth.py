"""Who is calling: bearer tokens with scopes, kept hashed in a file the server re-reads on change.

A token file (YAML or JSON) lists principals::

    tokens:
      - name: alice                 # owns what she creates; [A-Za-z0-9._@-], at most 64
        sha256: 9f86d081...         # of the token; the token itself is never stored
        scopes: [jobs, inference]   # inference | jobs | admin

``edgetune token add NAME --scopes ... --file FILE`` makes a token, prints it once and appends
its hash. Scopes: ``inference`` runs Predict / Generate / the Open Inference Protocol on any
finished export; ``jobs`` uploads datasets and runs jobs and exports (the caller's own);
``admin`` does everything, on every principal's resources.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgetune.errors import InvalidArgument, PermissionDenied

log = logging.getLogger("edgetune.server")

INFERENCE, JOBS, ADMIN = "inference", "jobs", "admin"
SCOPES = (INFERENCE, JOBS, ADMIN)
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
TOKEN_PREFIX = "et_"
RELOAD_CHECK_S = 1.0  # the token file's mtime is looked at no more often than this


@dataclass(frozen=True)
class Principal:
    """The caller an RPC runs for. ``name`` owns the resources it creates."""

    name: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return ADMIN in self.scopes

    def can(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    def owner_filter(self) -> str | None:
        """What List RPCs show: the caller's own resources, or everyone's for an admin."""
        return None if self.admin else self.name

    def check_owner(self, field: str, owner: str, what: str) -> None:
        if not (self.admin or owner == self.name):
            raise PermissionDenied(field, f"this {what} belongs to another principal; the admin scope is needed")


# Without auth (one trusted user on loopback): everything, as the anonymous owner ''.
ANONYMOUS = Principal("", frozenset(SCOPES))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_tokens(text: str, source: str) -> dict[str, Principal]:
    """The principals of a token file's text, by token hash; InvalidArgument names the entry."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InvalidArgument(source, f"not YAML/JSON: {str(e).splitlines()[0]}") from None
    entries = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise InvalidArgument(source, "must hold a 'tokens' list")
    out: dict[str, Principal] = {}
    names = set()
    for i, e in enumerate(entries):
        where = f"{source}: tokens[{i}]"
        if not isinstance(e, dict) or set(e) - {"name", "sha256", "scopes"}:
            raise InvalidArgument(where, "expected name, sha256 and scopes")
        name, digest, scopes = e.get("name"), e.get("sha256"), e.get("scopes")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidArgument(f"{where}.name", "1-64 of A-Z a-z 0-9 . _ @ -")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise InvalidArgument(f"{where}.sha256", "64 lower-case hex digits (the token's SHA-256)")
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
            raise InvalidArgument(f"{where}.scopes", f"a non-empty list of {', '.join(SCOPES)}")
        if digest in out or name in names:
            raise InvalidArgument(where, f"duplicate token or name {name!r}")
        names.add(name)
        out[digest] = Principal(name, frozenset(scopes))
    return out


class TokenFile:
    """The principals of a token file, re-read when it changes (a broken edit keeps the last good
    set and is logged, so a typo never locks everyone out or lets anyone in)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._checked = 0.0
        try:
            text = self.path.read_text()
        except OSError as e:
            raise InvalidArgument("--auth-tokens", f"cannot read the token file: {e.strerror or e}") from None
        self._principals = parse_tokens(text, str(self.path))  # a bad file stops the start
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, ...] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino

    def principal(self, token: str) -> Principal | None:
        self._maybe_reload()
        digest = token_hash(token)
        for known, p in self._principals.items():  # constant-time compare, whatever matches
            if hmac.compare_digest(known, digest):
                return p
        return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return
        with self._lock:
            self._checked = now
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            if stamp is None:  # removed: nobody gets in until it is back
                self._principals = {}
                log.error("token file %s is gone: every call is refused until it is back", self.path)
                return
            try:
                self._principals = parse_tokens(self.path.read_text(), str(self.path))
                log.info("token file reloaded: %d principal(s)", len(self._principals))
            except (OSError, InvalidArgument) as e:
                log.error("token file %s not reloaded, keeping the previous tokens: %s", self.path, e)


def add_token(path: str | Path, name: str, scopes: list[str]) -> str:
    """Append a principal to a token file (made if missing) and return its new token."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text()) if path.exists() else None
    doc = doc or {"tokens": []}
    token = new_token()
    doc.setdefault("tokens", []).append({"name": name, "sha256": token_hash(token), "scopes": list(scopes)})
    parse_tokens(json.dumps(doc), str(path))  # refuse what the server would refuse
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return token
