"""asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """`await` with a time limit (TimeoutError; None: no limit). Uses asyncio.timeout: Python 3.11's wait_for can
    swallow a cancellation that races with completion, which would leave a checker running after
    stop or reload."""
    async with asyncio.timeout(seconds):
        return await awaitable
