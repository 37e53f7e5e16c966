"""Users, rights and tokens.

Passwords are hashed with scrypt. Tokens are random (256 bits), given to the
client once and kept only as SHA-256 hashes, compared in constant time, expire
after `token-expire-ms` (or an admin's `ttl`) and are bound to the client IP
unless minted with `ip=*`. Users and token hashes persist in the meta store so a
restart keeps everyone logged in; the token table itself is m1lite/tokens.py.

Logins at scale: the browser script logs every visitor tab in with the site's
publish-only user, the same password each time. A verified-password cache
(`_VerifiedPasswords`) lets a repeat of a password that scrypt already accepted
skip scrypt; anything else still pays for it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable

import msgspec

from m1lite.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from m1lite.storage.meta import MetaStore
from m1lite.tokens import DEFAULT_CACHE_SIZE, Token, TokenTable

RIGHTS = ("admin", "schema", "get", "publish", "sessionQuery", "sessionUpdate")
ANY_IP = ("*", "...")  # the docs render the any-IP placeholder as "..."
_RIGHT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,128}$")

# scrypt cost: about 30-50 ms and 16 MiB per check here; interactive-login strength.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
# At most one scrypt per core at a time: more only adds memory (16 MiB each) and makes
# every one of them slower; the others wait their turn in their worker thread.
_SCRYPT_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


class User(msgspec.Struct):
    username: str
    rights: list[str]
    password_hash: str
    # New for every user added (not changed by password or rights changes); tokens carry
    # it, so a user removed and added again does not inherit the old user's tokens.
    generation: str = ""

    def public(self) -> dict[str, object]:
        return {"username": self.username, "rights": list(self.rights)}


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    with _SCRYPT_SLOTS:
        return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    derived = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, 32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${derived.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        derived = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p), len(expected) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(derived.hex(), expected)


class _VerifiedPasswords:
    """Per user, a keyed digest of the last password that passed scrypt.

    Why this is safe:
    - It only ever says yes to the exact password scrypt accepted against the user's
      current hash: the digest is HMAC-SHA256 under a random key made at start and never
      written anywhere, over (password_hash, password), and the entry also keeps the
      hash it was verified against. A password change, removal or re-add drops it, and
      an entry left from before a change cannot match the new hash anyway.
    - Anything that does not match falls through to the full scrypt check, so a wrong
      guess costs what it always did: brute force over HTTP is not sped up, and a
      wrong password's answer takes the same time as before.
    - Nothing reaches disk; the plaintext is never kept. What the cache gives up: a dump
      of the process memory (key and digests) would allow a fast offline guess of a
      cached password instead of a scrypt-speed one. Such a dump also holds the live
      request bodies (plaintext passwords of logins in flight), so the gain is small.
    - The fast answer only comes to someone who sent the right password, who learns
      nothing new from its speed.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._entries: dict[str, tuple[str, bytes]] = {}  # username → (hash, digest)
        self._lock = threading.Lock()

    def _digest(self, password_hash: str, password: str) -> bytes:
        message = password_hash.encode() + b"\0" + password.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def matches(self, user: User, password: str) -> bool:
        with self._lock:
            entry = self._entries.get(user.username)
        if entry is None or entry[0] != user.password_hash:
            return False
        return hmac.compare_digest(entry[1], self._digest(user.password_hash, password))

    def remember(self, user: User, password: str) -> None:
        digest = self._digest(user.password_hash, password)
        with self._lock:
            self._entries[user.username] = (user.password_hash, digest)

    def forget(self, username: str) -> None:
        with self._lock:
            self._entries.pop(username, None)


def parse_rights(value: object) -> list[str]:
    """Rights as a JSON array or a comma list; each a case-sensitive name."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise BadRequest(f"rights is not a valid JSON array: {exc}") from None
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise BadRequest("rights must be a JSON array of strings or a comma list")
    rights: list[str] = []
    for right in value:
        if not _RIGHT_NAME.match(right):
            raise BadRequest(f"invalid right name: {right!r}")
        if right not in rights:
            rights.append(right)
    return rights


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now_ms() -> int:
    return int(time.time() * 1000)


class Auth:
    def __init__(self, meta: MetaStore, *, token_cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._meta = meta
        self.users: dict[str, User] = {
            key.removeprefix("user:"): msgspec.convert(value, User)
            for key, value in meta.items("user:")
        }
        self.tokens = TokenTable(meta, cache_size=token_cache_size)
        self.tokens.purge_expired(now_ms())
        self._verified = _VerifiedPasswords()
        # scrypt verifications run and logins answered from the verified-password cache
        # (for /health and the tests: a login that skipped scrypt is observable).
        self.password_checks = 0
        self.cached_logins = 0
        self._counter_lock = threading.Lock()

    # -- users ---------------------------------------------------------------------

    def has_users(self) -> bool:
        return bool(self.users)

    def check_password_rules(self, password: str, min_length: int) -> None:
        if len(password) < min_length:
            raise BadRequest(
                f"password must be at least {min_length} characters", code="password_too_short"
            )

    def add_user(self, username: str, password: str, rights: Iterable[str]) -> None:
        if not _USERNAME.match(username):
            raise BadRequest("username must be 1-128 characters of letters, digits and _ . @ + -")
        if username in self.users:
            raise Conflict(f"user {username} already exists", code="user_exists")
        user = User(username, list(rights), hash_password(password), secrets.token_hex(8))
        self._save(user)

    def update_rights(self, username: str, rights: Iterable[str]) -> None:
        user = self.get_user(username)
        self._save(msgspec.structs.replace(user, rights=list(rights)))

    def set_password(self, username: str, password: str) -> None:
        user = self.get_user(username)
        self._save(msgspec.structs.replace(user, password_hash=hash_password(password)))

    def remove_user(self, username: str) -> None:
        """The user goes; its tokens are refused from now on (their generation no longer
        matches any user) and their rows are purged when they expire."""
        self.get_user(username)
        self._meta.delete(f"user:{username}")
        del self.users[username]
        self._verified.forget(username)

    def get_user(self, username: str) -> User:
        user = self.users.get(username)
        if user is None:
            raise NotFound(f"no user named {username}", code="no_such_user")
        return user

    def _save(self, user: User) -> None:
        previous = self.users.get(user.username)
        self._meta.put(f"user:{user.username}", msgspec.to_builtins(user))
        self.users[user.username] = user
        # A new password or a new user of that name starts with no cached password: the
        # next login runs scrypt. (A rights change keeps it: same hash, same password.)
        if previous is None or previous.password_hash != user.password_hash:
            self._verified.forget(user.username)

    # -- logins ----------------------------------------------------------------------

    def login_cached(self, username: str, password: str) -> User | None:
        """The user, if this password is the one scrypt last accepted for it (a few µs);
        None means "not known good", not "wrong": then `login` decides."""
        user = self.users.get(username)
        if user is None or not self._verified.matches(user, password):
            return None
        with self._counter_lock:
            self.cached_logins += 1
        return user

    def login(self, username: str, password: str) -> User:
        """The user, if the password is right. May take one scrypt (tens of ms): call it
        from a worker thread."""
        cached = self.login_cached(username, password)
        if cached is not None:
            return cached
        user = self.users.get(username)
        # Verify against a dummy hash for unknown users so timing does not reveal them.
        stored = user.password_hash if user else _DUMMY_HASH
        with self._counter_lock:
            self.password_checks += 1
        if not verify_password(password, stored) or user is None:
            raise Unauthorized("wrong username or password", code="bad_credentials")
        self._verified.remember(user, password)
        return user

    # -- tokens ----------------------------------------------------------------------

    def mint_token(
        self, username: str, ip: str, ttl_ms: int, *, generation: str | None = None
    ) -> str:
        """A new token, durable when this returns (one LMDB commit, maybe shared with
        concurrent mints): call it from a worker thread. `generation`: that of the user
        whose password was checked, so a user removed (and maybe added again) meanwhile
        gets no token."""
        user = self.users.get(username)
        if user is None or (generation is not None and user.generation != generation):
            raise Unauthorized("wrong username or password", code="bad_credentials")
        token = secrets.token_urlsafe(32)
        record = Token(token_digest(token), username, ip, now_ms() + ttl_ms, user.generation)
        self.tokens.add(record)
        return token

    def purge_expired_tokens(self) -> int:
        return self.tokens.purge_expired(now_ms())

    def authenticate(self, token: str | None, client_ip: str) -> User:
        if not token:
            raise Unauthorized("missing m1-auth-token", code="missing_token")
        digest = token_digest(token)
        record = self.tokens.find(digest)
        if record is None or not hmac.compare_digest(record.digest, digest):
            raise Unauthorized("invalid token", code="invalid_token")
        if record.expires_ms <= now_ms():
            self.tokens.forget(digest)
            raise Unauthorized("token expired", code="token_expired")
        if record.ip != "*" and record.ip != client_ip:
            raise Unauthorized("token was issued for another IP address", code="token_ip")
        user = self.users.get(record.username)
        if user is None or user.generation != record.generation:
            raise Unauthorized("the token's user no longer exists", code="invalid_token")
        return user


def require(user: User, rights: tuple[str, ...]) -> None:
    """The caller needs any one of the endpoint's rights; an empty set means any user."""
    if not rights:
        return
    for right in rights:
        if right in user.rights:
            return
    raise Forbidden(f"User {user.username} does not have requested right in set {','.join(rights)}")


_DUMMY_HASH = hash_password(secrets.token_hex(8))
