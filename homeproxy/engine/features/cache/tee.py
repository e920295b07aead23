"""`_Tee`: streams a body to the client while copying it into an entry that is stored only when complete."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable


class _Tee:
    """Passes a streamed body through while copying it; `commit` gets the whole body only
    if the stream ended cleanly with the expected length, otherwise `abandon` runs."""

    __slots__ = ("_abandon", "_chunks", "_commit", "_expected", "_limit", "_size", "_source")

    def __init__(
        self,
        source: AsyncIterator[bytes],
        *,
        limit: int,
        expected: int | None,
        commit: Callable[[bytes], None],
        abandon: Callable[[], None],
    ) -> None:
        self._source = source
        self._limit = limit
        self._expected = expected
        self._commit: Callable[[bytes], None] | None = commit
        self._abandon = abandon
        self._chunks: list[bytes] | None = []
        self._size = 0

    def __aiter__(self) -> _Tee:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await anext(self._source)
        except StopAsyncIteration:
            self._finish(clean=True)
            raise
        except BaseException:
            self._finish(clean=False)
            raise
        if self._chunks is not None:
            self._size += len(chunk)
            if self._size > self._limit:
                self._finish(clean=False)  # too big after all: stream on, store nothing
            else:
                self._chunks.append(chunk)
        return chunk

    async def aclose(self) -> None:
        self._finish(clean=False)
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    def _finish(self, *, clean: bool) -> None:
        commit, self._commit = self._commit, None
        if commit is None:
            return
        chunks, self._chunks = self._chunks, None
        if clean and chunks is not None and (self._expected is None or self._expected == self._size):
            commit(b"".join(chunks))
        else:
            self._abandon()
