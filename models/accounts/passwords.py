"""Password hashing: argon2id at or above OWASP's minimum, off the event loop, bounded.

Each hash or verify holds `memory_kib` of memory in a worker thread; a semaphore caps how
many run at once, so a burst of logins queues instead of exhausting memory.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 256
OWASP_MIN_MEMORY_KIB = 19 * 1024
OWASP_MIN_TIME_COST = 2


class PasswordPolicyError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_policy(password: str) -> None:
    """Length limits, checked before any hashing work is spent."""
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(
            "PASSWORD_TOO_SHORT", f"the password must have at least {MIN_LENGTH} characters"
        )
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(
            "PASSWORD_TOO_LONG", f"the password may have at most {MAX_LENGTH} characters"
        )


# The dummy hash unknown accounts verify against, per (memory, time) cost: computed once
# per process, so no sign-in pays for it.
_DUMMY_HASHES: dict[tuple[int, int], str] = {}


@dataclass
class Passwords:
    memory_kib: int = OWASP_MIN_MEMORY_KIB
    time_cost: int = OWASP_MIN_TIME_COST
    concurrency: int = 2
    active: int = 0
    peak: int = 0  # most hashes ever running at once (observability and tests)
    _hasher: PasswordHasher = field(init=False)
    _gate: asyncio.Semaphore | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.memory_kib < OWASP_MIN_MEMORY_KIB or self.time_cost < OWASP_MIN_TIME_COST:
            raise ValueError("argon2id parameters below OWASP's minimum (19 MiB, t=2)")
        self._hasher = PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=1,
            type=Type.ID,
        )

    async def _run(self, func: object, *args: str) -> object:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        async with self._gate:
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                return await asyncio.to_thread(func, *args)  # type: ignore[arg-type]
            finally:
                self.active -= 1

    async def hash(self, password: str) -> str:
        check_policy(password)
        return str(await self._run(self._hasher.hash, password))

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant work whether or not the account exists: unknown accounts verify
        against a dummy hash made with the same parameters."""
        if len(password) > MAX_LENGTH:
            stored_hash = None  # no account has such a password: spend the same time, fail
            password = password[:MAX_LENGTH]
        if stored_hash is None:
            await self._run(self._verify, self.dummy_hash(), password)
            return False
        return bool(await self._run(self._verify, stored_hash, password))

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def dummy_hash(self) -> str:
        """A hash with this cost of a random secret (computed at most once per process)."""
        params = (self.memory_kib, self.time_cost)
        found = _DUMMY_HASHES.get(params)
        if found is None:
            found = _DUMMY_HASHES[params] = self._hasher.hash(secrets.token_urlsafe(16))
        return found
