from argon2 import PasswordHasher

from user_svc.security import Passwords


def _hasher(time_cost: int = 1) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=1024, parallelism=1)


async def test_hash_verify_and_burn():
    passwords = Passwords(_hasher(), concurrency=2)
    stored = await passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert (await passwords.verify(stored, "correct horse")).ok
    assert not (await passwords.verify(stored, "wrong horse")).ok
    assert not (await passwords.verify("not-a-hash", "correct horse")).ok
    await passwords.burn("anything")


async def test_outdated_hash_is_upgraded_on_successful_verify():
    old = await Passwords(_hasher(time_cost=1), concurrency=1).hash("correct horse")
    current = Passwords(_hasher(time_cost=2), concurrency=1)
    check = await current.verify(old, "correct horse")
    assert check.ok
    assert check.new_hash is not None
    assert "t=2" in check.new_hash
    assert (await current.verify(check.new_hash, "correct horse")).new_hash is None
