"""The lab's disk thread: writes off the loop, answered in order, folders fsync'd once per batch."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from smtplab import disk
from smtplab.disk import DiskThread
from smtplab.mail.store import MailStore


@pytest.fixture
def thread():
    worker = DiskThread("test-disk")
    yield worker
    worker.close()


def test_a_job_runs_on_the_disk_thread_and_returns_its_result(thread):
    async def main():
        return await thread.run(lambda a, b: (threading.current_thread().name, a + b), 2, 3)

    assert asyncio.run(main()) == ("test-disk", 5)


def test_a_failing_job_raises_in_its_caller_and_the_thread_goes_on(thread, tmp_path):
    def fail():
        raise OSError(28, "No space left on device")

    async def main():
        with pytest.raises(OSError, match="No space left"):
            await thread.run(fail)
        return await thread.run(os.path.isdir, tmp_path)

    assert asyncio.run(main()) is True


def test_writes_waiting_together_share_one_folder_fsync(thread, tmp_path, monkeypatch):
    synced: list[str] = []
    real = disk.fsync_directory
    monkeypatch.setattr(disk, "fsync_directory", lambda path: (synced.append(path), real(path)))
    store = MailStore(tmp_path / "mail", "example.net")
    store.add_user("bob@example.net")
    gate, holding = threading.Event(), threading.Event()

    def hold() -> bool:
        holding.set()
        return gate.wait(10)

    async def main():
        blocker = asyncio.ensure_future(thread.run(hold))  # holds the thread: the rest pile up
        # Wait until the thread is inside hold(): on a busy machine it may wake late, and writes queued before
        # it took the blocker would share the blocker's batch instead of the next one.
        assert await asyncio.to_thread(holding.wait, 10)
        writes = [thread.run(lambda n=n: store.deliver("bob@example.net", b"Subject: %d\r\n\r\nhi\r\n" % n,
                                                       fsync_folder=thread.fsync_later)) for n in range(50)]
        tasks = [asyncio.ensure_future(w) for w in writes]
        await asyncio.sleep(0)  # each task ran up to its await: every write is queued behind the blocker
        gate.set()
        await blocker
        return await asyncio.gather(*tasks)

    names = asyncio.run(main())
    new = tmp_path / "mail" / "bob" / "new"
    assert sorted(os.listdir(new)) == sorted(names) and len(set(names)) == 50
    # Fifty messages, one commit: the folder was fsync'd once for all of them (and once per message without).
    assert synced == [str(new)]


def test_fsync_later_belongs_to_the_disk_thread(thread, tmp_path):
    with pytest.raises(RuntimeError, match="disk thread"):
        thread.fsync_later(tmp_path)


def test_close_finishes_the_writes_already_asked_for(tmp_path):
    worker = DiskThread("closing")
    done: list[int] = []

    async def main():
        futures = [asyncio.ensure_future(worker.run(done.append, n)) for n in range(20)]
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, worker.close)
        await asyncio.gather(*futures)

    asyncio.run(main())
    assert done == list(range(20))

    async def late():
        await worker.run(done.append, 99)

    with pytest.raises(RuntimeError, match="stopped"):
        asyncio.run(late())
