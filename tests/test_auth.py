"""m1lite.auth and m1lite.tokens on a real LMDB in tmp_path: the verified-password cache
(repeat logins skip scrypt, nothing else does), the token table behind a bounded cache,
the purge of expired tokens, and what a reopened data directory still knows.

"Skipped scrypt" is read from `Auth.password_checks` (scrypt verifications run), never
from timings.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from m1lite.auth import Auth, hash_password, token_digest
from m1lite.errors import TooManyRequests, Unauthorized
from m1lite.login_limits import FailureBudget, LoginLimits, address_key
from m1lite.storage.env import LakeEnv
from m1lite.storage.meta import MetaStore
from m1lite.tokens import EXPIRY_PREFIX, INDEX_MARKER, TOKEN_PREFIX, TokenPurger

HOUR_MS = 3_600_000
IP = "10.0.0.1"


class Lake:
    """A data directory's LMDB that a test can close and open again (a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = LakeEnv(path, map_size_mb=16, max_map_size_mb=256)
        self.meta = MetaStore(self.env)

    def reopen(self) -> MetaStore:
        self.env.close()
        self.env = LakeEnv(self.path, map_size_mb=16, max_map_size_mb=256)
        self.meta = MetaStore(self.env)
        return self.meta


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    opened = Lake(tmp_path / "lake")
    yield opened
    opened.env.close()


@pytest.fixture
def auth(lake: Lake) -> Auth:
    made = Auth(lake.meta)
    made.add_user("instrument", "instrument-pw", ["publish"])
    return made


def stored_token_rows(meta: MetaStore) -> set[str]:
    return {key.removeprefix(TOKEN_PREFIX) for key in meta.keys(TOKEN_PREFIX)}


# -- the verified-password cache ------------------------------------------------------------


def test_a_second_login_with_the_same_password_skips_scrypt(auth: Auth) -> None:
    assert auth.login("instrument", "instrument-pw").username == "instrument"
    assert auth.password_checks == 1
    for _ in range(5):
        assert auth.login("instrument", "instrument-pw").username == "instrument"
    assert auth.password_checks == 1
    assert auth.cached_logins == 5
    assert auth.login_cached("instrument", "instrument-pw") is not None


def test_nothing_is_cached_before_scrypt_accepted_a_password(auth: Auth) -> None:
    assert auth.login_cached("instrument", "instrument-pw") is None
    with pytest.raises(Unauthorized):
        auth.login("instrument", "wrong-password")
    assert auth.login_cached("instrument", "wrong-password") is None
    assert auth.login_cached("instrument", "instrument-pw") is None


def test_a_wrong_password_after_a_cached_right_one_is_refused_and_runs_scrypt(
    auth: Auth,
) -> None:
    auth.login("instrument", "instrument-pw")
    auth.login("instrument", "instrument-pw")
    checks = auth.password_checks
    for n, wrong in enumerate(("instrument-pw ", "instrument-p", "INSTRUMENT-PW", ""), start=1):
        with pytest.raises(Unauthorized) as refused:
            auth.login("instrument", wrong)
        assert refused.value.code == "bad_credentials"
        assert auth.password_checks == checks + n
    # The right password is still cached.
    auth.login("instrument", "instrument-pw")
    assert auth.password_checks == checks + 4


def test_unknown_users_always_run_scrypt(auth: Auth) -> None:
    for _ in range(3):
        with pytest.raises(Unauthorized):
            auth.login("ghost", "instrument-pw")
    assert auth.password_checks == 3


def test_a_password_change_invalidates_the_cached_password(auth: Auth) -> None:
    auth.login("instrument", "instrument-pw")
    auth.set_password("instrument", "new-instrument-pw")
    checks = auth.password_checks
    with pytest.raises(Unauthorized):
        auth.login("instrument", "instrument-pw")
    assert auth.password_checks == checks + 1
    assert auth.login("instrument", "new-instrument-pw").username == "instrument"
    assert auth.password_checks == checks + 2
    auth.login("instrument", "new-instrument-pw")
    assert auth.password_checks == checks + 2


def test_setting_the_same_password_again_still_needs_scrypt_once(auth: Auth) -> None:
    """A new hash (new salt) is a new entry: the old one cannot match it."""
    auth.login("instrument", "instrument-pw")
    auth.set_password("instrument", "instrument-pw")
    checks = auth.password_checks
    auth.login("instrument", "instrument-pw")
    assert auth.password_checks == checks + 1


def test_removing_and_adding_a_user_invalidates_the_cached_password(auth: Auth) -> None:
    auth.login("instrument", "instrument-pw")
    auth.remove_user("instrument")
    with pytest.raises(Unauthorized):
        auth.login("instrument", "instrument-pw")
    auth.add_user("instrument", "other-instrument-pw", ["publish"])
    with pytest.raises(Unauthorized):
        auth.login("instrument", "instrument-pw")
    checks = auth.password_checks
    assert auth.login_cached("instrument", "other-instrument-pw") is None
    auth.login("instrument", "other-instrument-pw")
    assert auth.password_checks == checks + 1


def test_a_rights_change_keeps_the_cached_password_and_takes_effect(auth: Auth) -> None:
    auth.login("instrument", "instrument-pw")
    auth.update_rights("instrument", ["publish", "get"])
    user = auth.login_cached("instrument", "instrument-pw")
    assert user is not None and user.rights == ["publish", "get"]


def test_the_cache_is_per_process(lake: Lake, auth: Auth) -> None:
    auth.login("instrument", "instrument-pw")
    again = Auth(lake.reopen())
    assert again.login_cached("instrument", "instrument-pw") is None
    again.login("instrument", "instrument-pw")
    assert again.password_checks == 1


# -- the token table ------------------------------------------------------------------------


def test_tokens_pushed_out_of_the_memory_cache_are_found_in_lmdb(lake: Lake) -> None:
    auth = Auth(lake.meta, token_cache_size=4)
    auth.add_user("instrument", "instrument-pw", ["publish"])
    first = auth.mint_token("instrument", IP, HOUR_MS)
    others = [auth.mint_token("instrument", IP, HOUR_MS) for _ in range(40)]
    assert auth.tokens.cached() == 4
    assert auth.tokens.disk_lookups == 0
    assert auth.authenticate(first, IP).username == "instrument"
    assert auth.tokens.disk_lookups == 1
    assert auth.authenticate(first, IP).username == "instrument"  # now cached
    assert auth.tokens.disk_lookups == 1
    for token in others:
        assert auth.authenticate(token, IP).username == "instrument"
    assert auth.tokens.cached() == 4


def test_tokens_keep_their_checks_when_read_from_lmdb(lake: Lake) -> None:
    auth = Auth(lake.meta, token_cache_size=1)
    auth.add_user("instrument", "instrument-pw", ["publish"])
    bound = auth.mint_token("instrument", IP, HOUR_MS)
    short = auth.mint_token("instrument", IP, 1)
    auth.mint_token("instrument", IP, HOUR_MS)  # pushes both out of the cache
    time.sleep(0.01)  # the short token lived 1 ms
    with pytest.raises(Unauthorized) as refused:
        auth.authenticate(bound, "10.9.9.9")
    assert refused.value.code == "token_ip"
    with pytest.raises(Unauthorized) as refused:
        auth.authenticate(short, IP)
    assert refused.value.code == "token_expired"
    for wrong in ("not-a-token", bound + "x", bound[:-1]):
        with pytest.raises(Unauthorized) as refused:
            auth.authenticate(wrong, IP)
        assert refused.value.code == "invalid_token"


def test_tokens_survive_reopening_and_only_their_hashes_are_stored(lake: Lake, auth: Auth) -> None:
    tokens = [auth.mint_token("instrument", IP, HOUR_MS) for _ in range(5)]
    meta = lake.reopen()
    again = Auth(meta)
    for token in tokens:
        assert again.authenticate(token, IP).username == "instrument"
    assert stored_token_rows(meta) == {token_digest(t) for t in tokens}
    raw = (lake.path / "data.mdb").read_bytes()
    assert not any(token.encode() in raw for token in tokens)
    assert b"instrument-pw" not in raw


def test_a_removed_users_tokens_are_refused_also_for_a_new_user_of_that_name(
    lake: Lake, auth: Auth
) -> None:
    token = auth.mint_token("instrument", IP, HOUR_MS)
    auth.remove_user("instrument")
    auth.add_user("instrument", "instrument-pw", ["publish"])
    with pytest.raises(Unauthorized):
        auth.authenticate(token, IP)
    again = Auth(lake.reopen())  # and after a restart, read from LMDB
    with pytest.raises(Unauthorized):
        again.authenticate(token, IP)
    fresh = again.mint_token("instrument", IP, HOUR_MS)
    assert again.authenticate(fresh, IP).username == "instrument"


def test_no_token_for_a_login_whose_user_was_replaced_meanwhile(auth: Auth) -> None:
    checked = auth.login("instrument", "instrument-pw")
    auth.remove_user("instrument")
    with pytest.raises(Unauthorized):
        auth.mint_token("instrument", IP, HOUR_MS, generation=checked.generation)
    auth.add_user("instrument", "instrument-pw", ["publish"])
    with pytest.raises(Unauthorized):
        auth.mint_token("instrument", IP, HOUR_MS, generation=checked.generation)
    again = auth.login("instrument", "instrument-pw")
    token = auth.mint_token("instrument", IP, HOUR_MS, generation=again.generation)
    assert auth.authenticate(token, IP).username == "instrument"


def test_concurrent_mints_are_all_durable(lake: Lake, auth: Auth) -> None:
    minted: list[str] = []
    lock = threading.Lock()

    def mint() -> None:
        for _ in range(25):
            token = auth.mint_token("instrument", IP, HOUR_MS)
            with lock:
                minted.append(token)

    threads = [threading.Thread(target=mint) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(minted) == 200 and auth.tokens.minted == 200
    assert 1 <= auth.tokens.commits <= 200
    again = Auth(lake.reopen(), token_cache_size=1)
    for token in minted:
        assert again.authenticate(token, IP).username == "instrument"


def test_an_enormous_ttl_is_capped_not_an_error(auth: Auth) -> None:
    token = auth.mint_token("instrument", IP, 10**30)
    assert auth.authenticate(token, IP).username == "instrument"


# -- expiry ---------------------------------------------------------------------------------


def test_purge_deletes_expired_rows_from_lmdb_and_memory(lake: Lake, auth: Auth) -> None:
    expired = [auth.mint_token("instrument", IP, 1) for _ in range(3)]
    live = [auth.mint_token("instrument", IP, HOUR_MS) for _ in range(2)]
    time.sleep(0.01)
    assert auth.purge_expired_tokens() == 3
    assert stored_token_rows(lake.meta) == {token_digest(t) for t in live}
    assert len(lake.meta.keys(EXPIRY_PREFIX)) == 2
    assert auth.tokens.cached() == 2
    for token in expired:
        with pytest.raises(Unauthorized) as refused:
            auth.authenticate(token, IP)
        assert refused.value.code == "invalid_token"
    assert auth.purge_expired_tokens() == 0


def test_purge_works_in_batches(lake: Lake, auth: Auth, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("m1lite.tokens.PURGE_BATCH", 7)
    for _ in range(30):
        auth.mint_token("instrument", IP, 1)
    live = auth.mint_token("instrument", IP, HOUR_MS)
    time.sleep(0.01)
    assert auth.purge_expired_tokens() == 30
    assert stored_token_rows(lake.meta) == {token_digest(live)}


def test_expired_tokens_are_purged_at_start(lake: Lake, auth: Auth) -> None:
    auth.mint_token("instrument", IP, 1)
    live = auth.mint_token("instrument", IP, HOUR_MS)
    time.sleep(0.01)
    again = Auth(lake.reopen())
    assert stored_token_rows(lake.meta) == {token_digest(live)}
    assert again.tokens.purged == 1


def test_a_data_directory_from_an_older_version_keeps_its_tokens(lake: Lake) -> None:
    """Rows as older m1lite wrote them: users without a generation, tokens as maps with
    their digest, no expiry keys."""
    now = int(time.time() * 1000)
    lake.meta.put(
        "user:instrument",
        {"username": "instrument", "rights": ["publish"], "password_hash": hash_password("pw")},
    )
    live, expired = "an-old-live-token", "an-old-expired-token"
    for token, expires in ((live, now + HOUR_MS), (expired, now - 1)):
        digest = token_digest(token)
        row = {"digest": digest, "username": "instrument", "ip": "*", "expires_ms": expires}
        lake.meta.put(TOKEN_PREFIX + digest, row)
    auth = Auth(lake.meta, token_cache_size=1)
    assert lake.meta.get(INDEX_MARKER) == 1
    assert stored_token_rows(lake.meta) == {token_digest(live)}
    assert len(lake.meta.keys(EXPIRY_PREFIX)) == 1
    assert auth.authenticate(live, "192.0.2.1").username == "instrument"
    with pytest.raises(Unauthorized):
        auth.authenticate(expired, "192.0.2.1")
    # New tokens of that user (new row format) work alongside, and after a restart.
    fresh = auth.mint_token("instrument", IP, HOUR_MS)
    again = Auth(lake.reopen(), token_cache_size=1)
    assert again.authenticate(fresh, IP).username == "instrument"
    assert again.authenticate(live, "192.0.2.1").username == "instrument"
    assert again.login("instrument", "pw").username == "instrument"


def test_the_purger_deletes_expired_tokens_while_running(lake: Lake, auth: Auth) -> None:
    live = auth.mint_token("instrument", IP, HOUR_MS)

    async def run() -> None:
        purger = TokenPurger(auth.purge_expired_tokens, 0.02)
        purger.start()
        try:
            auth.mint_token("instrument", IP, 1)
            auth.mint_token("instrument", IP, 1)
            deadline = time.monotonic() + 30
            while auth.tokens.purged < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await purger.stop()

    asyncio.run(run())
    assert auth.tokens.purged == 2
    assert stored_token_rows(lake.meta) == {token_digest(live)}


# -- the meta store's key scan ----------------------------------------------------------------


def test_meta_keys_by_prefix_bound_and_limit(lake: Lake) -> None:
    lake.meta.put_many({f"k:{n:02d}": n for n in range(10)} | {"k": 0, "kz": 0, "j:1": 0})
    assert lake.meta.keys("k:") == [f"k:{n:02d}" for n in range(10)]
    assert lake.meta.keys("k:", below="k:05") == [f"k:{n:02d}" for n in range(5)]
    assert lake.meta.keys("k:", limit=3) == ["k:00", "k:01", "k:02"]
    assert lake.meta.keys("k:", below="k:05", limit=10) == [f"k:{n:02d}" for n in range(5)]
    assert lake.meta.keys("x:") == []


# -- brute-force protection: failure budgets per address and per username ----------------------
# A test clock (seconds, moved by hand) stands in for time.monotonic: what a budget allows
# after a wait is asserted without waiting and without measuring anything.


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_allows_its_limit_at_once_then_one_per_interval() -> None:
    clock = Clock()
    budget = FailureBudget(3, 60.0, clock=clock)
    assert [budget.charge("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.charge("a") == pytest.approx(20.0)  # refused: counts nothing more
    assert budget.wait_s("a") == pytest.approx(20.0)
    clock.now += 19.0
    assert budget.charge("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert budget.wait_s("a") == 0.0
    assert budget.charge("a") == 0.0  # one more per window/limit
    assert budget.charge("a") == pytest.approx(20.0)
    clock.now += 60.0  # a whole window later: a clean start
    assert [budget.charge("a") for _ in range(3)] == [0.0, 0.0, 0.0]


def test_a_budget_is_per_key() -> None:
    budget = FailureBudget(2, 60.0, clock=Clock())
    budget.charge("a")
    budget.charge("a")
    assert budget.wait_s("a") > 0
    assert budget.wait_s("b") == 0.0
    assert budget.charge("b") == 0.0


def test_refunded_charges_never_use_the_budget() -> None:
    clock = Clock()
    budget = FailureBudget(2, 60.0, clock=clock)
    for _ in range(1000):
        assert budget.charge("nat") == 0.0
        budget.refund("nat")
    assert len(budget) == 0  # nothing left to remember
    budget.charge("nat")
    budget.charge("nat")
    budget.refund("nat")  # one success does not clear the other failure
    assert budget.charge("nat") == 0.0
    assert budget.charge("nat") > 0


def test_a_budget_remembers_a_bounded_number_of_keys_dropping_the_oldest() -> None:
    budget = FailureBudget(1, 60.0, max_entries=100, clock=Clock())
    for n in range(250):
        budget.charge(f"10.0.{n // 256}.{n % 256}")
    assert len(budget) == 100
    assert budget.wait_s("10.0.0.149") == 0.0  # forgotten
    assert budget.wait_s("10.0.0.150") > 0  # among the newest: still refused


def test_a_refused_key_stays_remembered_while_it_keeps_trying() -> None:
    budget = FailureBudget(1, 60.0, max_entries=3, clock=Clock())
    budget.charge("attacker")
    budget.charge("b")
    budget.charge("c")
    assert budget.charge("attacker") > 0  # refused, and now the most recent
    budget.charge("d")
    assert len(budget) == 3
    assert budget.wait_s("attacker") > 0
    assert budget.wait_s("b") == 0.0


def test_a_zero_limit_means_no_limit() -> None:
    budget = FailureBudget(0, 60.0, clock=Clock())
    assert all(budget.charge("a") == 0.0 for _ in range(100))
    assert len(budget) == 0


def test_ipv6_addresses_are_counted_per_64_and_ipv4_as_they_are() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("testclient") == "testclient"


def test_an_address_over_budget_is_refused_before_any_check_with_retry_after() -> None:
    limits = LoginLimits(2, 100, 60.0, clock=Clock())
    for _ in range(2):
        limits.begin_check("192.0.2.1", "admin")  # two failures: never refunded
    with pytest.raises(TooManyRequests) as refused:
        limits.check_address("192.0.2.1")
    assert refused.value.status == 429
    assert refused.value.code == "too_many_failed_logins"
    assert refused.value.retry_after_s == 30
    assert "from this address" in refused.value.message
    with pytest.raises(TooManyRequests):
        limits.begin_check("192.0.2.1", "admin")
    limits.check_address("192.0.2.2")  # another address: unaffected
    assert limits.refused == 2


def test_a_username_over_budget_refuses_checks_and_still_costs_the_address() -> None:
    limits = LoginLimits(3, 2, 60.0, clock=Clock())
    limits.begin_check("192.0.2.1", "admin")
    limits.begin_check("192.0.2.2", "admin")
    with pytest.raises(TooManyRequests) as refused:
        limits.begin_check("192.0.2.3", "admin")
    assert "for this username" in refused.value.message
    assert refused.value.retry_after_s == 30
    # The refused attempt counted against its address: two more and it is over too.
    limits.begin_check("192.0.2.3", "other")
    limits.begin_check("192.0.2.3", "other")
    with pytest.raises(TooManyRequests):
        limits.check_address("192.0.2.3")
    # Another username is unaffected.
    limits.begin_check("192.0.2.4", "analyst")


def test_a_right_password_gives_back_both_charges_and_nobody_elses() -> None:
    limits = LoginLimits(2, 2, 60.0, clock=Clock())
    limits.begin_check("192.0.2.1", "admin")  # a failure from .1
    for _ in range(10):  # successes from .2: never limited, never counted
        limits.begin_check("192.0.2.2", "admin")
        limits.succeeded("192.0.2.2", "admin")
    limits.begin_check("192.0.2.1", "admin")  # .1's second failure: its success did not count
    with pytest.raises(TooManyRequests):
        limits.check_address("192.0.2.1")
    limits.check_address("192.0.2.2")
