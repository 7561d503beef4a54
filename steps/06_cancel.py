"""Step 6: cancel a running job on DELETE, and what a client's disconnect cancels.

    .venv/bin/python steps/06_cancel.py              # the job cleans up when cancelled
    .venv/bin/python steps/06_cancel.py --swallow    # break it: the job ignores its cancel

Part 1. A server starts one ffmpeg job per POST /jobs, as a task, and keeps the
task. DELETE /jobs/{id} calls `task.cancel()` and awaits the task: at the
job's current await (`process.wait()`), asyncio raises CancelledError. The job
catches it only to clean up: it stops ffmpeg, waits for it to exit, removes the
half-written output, and raises the CancelledError again so that the task ends
as cancelled. `Task.cancelling()` counts the cancel requests pending on a task:
1 here, read inside the job's except block.

Break it with --swallow: the job catches the CancelledError and returns. The
task ends "normally", the DELETE cannot tell, and ffmpeg runs on, writing a
file that nobody will ever use, until it exits by itself.

Part 2. A client asks GET /slow (a handler that sleeps 0.5 s) and hangs up
after 0.1 s. With aiohttp's default, `handler_cancellation=False` (the one
`web.run_app` uses), the handler is not cancelled: it runs to its end, and only
its answer is lost. With `handler_cancellation=True`, the handler is cancelled
at its current await.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
import tempfile

import imageio_ffmpeg
from aiohttp import ClientSession, ClientTimeout, web

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
JOBS = web.AppKey("jobs", dict)
REPORT = web.AppKey("report", dict)


async def job(folder: Path, number: int, swallow: bool, report: dict[str, object]) -> None:
    output = folder / f"job-{number}.mp4"
    process = await asyncio.create_subprocess_exec(
        FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-re", "-f", "lavfi",
        "-i", "testsrc=duration=30:size=160x120:rate=10", "-c:v", "libx264",
        "-preset", "ultrafast", str(output))
    report["process"], report["output"] = process, output
    try:
        await process.wait()  # 30 s of video at its real pace: long enough to be cancelled
    except asyncio.CancelledError:
        task = asyncio.current_task()
        assert task is not None
        report["cancelling"] = task.cancelling()
        if swallow:
            return  # the mistake: the cancel is swallowed and ffmpeg is left running
        process.terminate()
        await process.wait()  # a moment: ffmpeg exits on SIGTERM
        output.unlink(missing_ok=True)
        raise  # the task ends as cancelled, as whoever cancelled it expects


def make_app(folder: Path, swallow: bool) -> web.Application:
    async def start(request: web.Request) -> web.Response:
        number = len(request.app[JOBS]) + 1
        request.app[JOBS][number] = asyncio.create_task(
            job(folder, number, swallow, request.app[REPORT]))
        return web.json_response({"id": number}, status=201)

    async def stop(request: web.Request) -> web.Response:
        task = request.app[JOBS].pop(int(request.match_info["number"]))
        task.cancel()
        try:
            await task  # until the job has cleaned up
        except asyncio.CancelledError:
            pass  # the job's cancel, which ends here; this handler is not being cancelled
        return web.json_response({"cancelled": task.cancelled()})

    app = web.Application()
    app[JOBS] = {}
    app[REPORT] = {}
    app.router.add_post("/jobs", start)
    app.router.add_delete("/jobs/{number}", stop)
    return app


async def serve(app: web.Application, handler_cancellation: bool = False) -> web.AppRunner:
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def cancel_a_job(swallow: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="step6-") as name:
        app = make_app(Path(name), swallow)
        runner = await serve(app)
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        report = app[REPORT]
        async with ClientSession() as session:
            async with session.post(f"{url}/jobs") as answer:
                number = (await answer.json())["id"]
            while "output" not in report or not report["output"].exists():
                await asyncio.sleep(0.05)  # until ffmpeg has begun its file
            sent = time.perf_counter()
            async with session.delete(f"{url}/jobs/{number}") as answer:
                cancelled = (await answer.json())["cancelled"]
            took = (time.perf_counter() - sent) * 1000
        process = report["process"]
        running = process.returncode is None
        print(f"DELETE answered in {took:.0f} ms; task.cancelled(): {cancelled}; "
              f"cancelling() in the job: {report['cancelling']}")
        print(f"ffmpeg still running after the DELETE: {running}; "
              f"output still on disk: {report['output'].exists()}")
        if running:
            process.kill()
            await process.wait()
        await runner.cleanup()


async def hang_up(handler_cancellation: bool) -> None:
    outcome: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            outcome.append("cancelled at its await")
            raise
        outcome.append("ran to its end")
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = await serve(app, handler_cancellation)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slow"
    async with ClientSession(timeout=ClientTimeout(total=0.1)) as session:
        try:
            await session.get(url)
        except asyncio.TimeoutError:
            pass  # the client gives up and closes the connection
    deadline = time.perf_counter() + 5
    while not outcome and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    print(f"handler_cancellation={handler_cancellation}: client hung up after 0.1 s; "
          f"the handler {outcome[0] if outcome else 'never finished'}")
    await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swallow", action="store_true", help="the job swallows its cancel")
    args = parser.parse_args()
    await cancel_a_job(args.swallow)
    await hang_up(handler_cancellation=False)
    await hang_up(handler_cancellation=True)


if __name__ == "__main__":
    asyncio.run(main())
