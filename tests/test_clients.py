"""Hostile clients: what one client may hold of the server, and what the server shows
of itself to others (the files it writes, its logs, its redirects, its refusals)."""

from __future__ import annotations

import stat
from pathlib import Path

from .support import tus
from .support.clips import Clips
from .support.servers import running_server
from .support.uploading import upload_ok, wait_for_state
from .support.waiting import in_snapshot


async def test_the_data_dir_is_private_whatever_the_umask(tmp_path: Path, clips: Clips) -> None:
    data_dir = tmp_path / "data"
    async with running_server(data_dir, umask=0o000) as server, server.session() as session:
        task = await upload_ok(session, clips.small(), "480")
        await wait_for_state(session, task["id"], "COMPLETED")
        await in_snapshot(data_dir, task["id"], "COMPLETED")
        unfinished = await tus.created(session, 1000)
        assert (await tus.patch(session, unfinished, 0, clips.small().read_bytes()[:500])).status == 204
        ended = await tus.created(session, 1000)
        assert (await session.delete(ended, headers=tus.TUS)).status == 204
    kinds = {path.relative_to(data_dir).as_posix(): stat.S_IMODE(path.stat().st_mode)
             for path in [data_dir, *data_dir.rglob("*")]}
    # the kinds of file the server writes, each seen at least once
    names = " ".join(kinds)
    for expected in ("uploads/", "outputs/", ".mp4", ".jpg", ".tus", ".tus.json", "tasks.json",
                     "tasks.json.lock", "resumable-ended.json"):
        assert expected in names, names
    opened = {name: oct(mode) for name, mode in kinds.items()
              if mode != (0o700 if (data_dir / name).is_dir() else 0o600)}
    assert opened == {}
