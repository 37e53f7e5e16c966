"""Users, rights and tokens.

Passwords are hashed with scrypt. Tokens are random (256 bits), given to the
client once and kept only as SHA-256 hashes, compared in constant time, expire
after `token-expire-ms` (or an admin's `ttl`) and are bound to the client IP
unless minted with `ip=*`. Users and token hashes persist in the meta store so a
restart keeps everyone logged in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable

import msgspec

from m1lite.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from m1lite.storage.meta import MetaStore

RIGHTS = ("admin", "schema", "get", "publish", "sessionQuery", "sessionUpdate")
ANY_IP = ("*", "...")  # the docs render the any-IP placeholder as "..."
_RIGHT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,128}$")

# scrypt cost: about 50 ms and 16 MiB per check here; interactive-login strength.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class User(msgspec.Struct):
    username: str
    rights: list[str]
    password_hash: str

    def public(self) -> dict[str, object]:
        return {"username": self.username, "rights": list(self.rights)}


class Token(msgspec.Struct):
    digest: str  # sha256 hex of the token
    username: str
    ip: str  # the client IP it is bound to, or "*"
    expires_ms: int


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    derived = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${derived.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        derived = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected) // 2,
        )
    except ValueError:
        return False
    return hmac.compare_digest(derived.hex(), expected)


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
    def __init__(self, meta: MetaStore) -> None:
        self._meta = meta
        self.users: dict[str, User] = {
            key.removeprefix("user:"): msgspec.convert(value, User)
            for key, value in meta.items("user:")
        }
        self._tokens: dict[str, Token] = {}
        expired = []
        now = now_ms()
        for key, value in meta.items("token:"):
            token = msgspec.convert(value, Token)
            if token.expires_ms <= now:
                expired.append(key)
            else:
                self._tokens[token.digest] = token
        if expired:
            meta.put_many({}, deletes=tuple(expired))

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
        user = User(username, list(rights), hash_password(password))
        self._save(user)

    def update_rights(self, username: str, rights: Iterable[str]) -> None:
        user = self.get_user(username)
        self._save(User(user.username, list(rights), user.password_hash))

    def set_password(self, username: str, password: str) -> None:
        user = self.get_user(username)
        self._save(User(user.username, user.rights, hash_password(password)))

    def remove_user(self, username: str) -> None:
        self.get_user(username)
        digests = [d for d, t in self._tokens.items() if t.username == username]
        self._meta.put_many({}, deletes=(f"user:{username}", *(f"token:{d}" for d in digests)))
        del self.users[username]
        for digest in digests:
            self._tokens.pop(digest, None)

    def get_user(self, username: str) -> User:
        user = self.users.get(username)
        if user is None:
            raise NotFound(f"no user named {username}", code="no_such_user")
        return user

    def _save(self, user: User) -> None:
        self._meta.put(f"user:{user.username}", msgspec.to_builtins(user))
        self.users[user.username] = user

    # -- tokens ---------------------------------------------------------------------

    def login(self, username: str, password: str) -> User:
        user = self.users.get(username)
        # Verify against a dummy hash for unknown users so timing does not reveal them.
        stored = user.password_hash if user else _DUMMY_HASH
        if not verify_password(password, stored) or user is None:
            raise Unauthorized("wrong username or password", code="bad_credentials")
        return user

    def mint_token(self, username: str, ip: str, ttl_ms: int) -> str:
        token = secrets.token_urlsafe(32)
        record = Token(token_digest(token), username, ip, now_ms() + ttl_ms)
        self._meta.put(f"token:{record.digest}", msgspec.to_builtins(record))
        self._tokens[record.digest] = record
        return token

    def authenticate(self, token: str | None, client_ip: str) -> User:
        if not token:
            raise Unauthorized("missing m1-auth-token", code="missing_token")
        digest = token_digest(token)
        record = self._tokens.get(digest)
        if record is None or not hmac.compare_digest(record.digest, digest):
            raise Unauthorized("invalid token", code="invalid_token")
        if record.expires_ms <= now_ms():
            self._tokens.pop(digest, None)
            raise Unauthorized("token expired", code="token_expired")
        if record.ip != "*" and record.ip != client_ip:
            raise Unauthorized("token was issued for another IP address", code="token_ip")
        user = self.users.get(record.username)
        if user is None:
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
