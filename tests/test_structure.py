"""The package's shape: what a process loads, and which module may import which."""

from __future__ import annotations

import json
import subprocess
import sys

# A queue worker's whole start: the command's entry, the worker module, the SAQ pieces its
# serve() imports, and the job function built from its settings.
WORKER_START = """
import json, sys
import video_async.__main__
from video_async.config import Settings
from video_async.remote_worker import make_job
from saq import Worker
from saq.queue.redis import RedisQueue
settings = Settings.for_worker(["--queue", "redis://127.0.0.1:1/0", "--data-dir", "."])
make_job(settings, "ffmpeg")
print(json.dumps(sorted(sys.modules)))
"""


def test_a_queue_worker_loads_no_web_server_and_no_templates() -> None:
    done = subprocess.run([sys.executable, "-c", WORKER_START], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert "video_async.remote_worker" in loaded and "video_async.worker" in loaded
    web = [name for name in loaded
           if name.startswith(("aiohttp.web", "jinja2", "video_async.routes", "video_async.app",
                               "video_async.keys", "video_async.access", "video_async.errors"))]
    assert web == []
