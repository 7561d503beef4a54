"""Who may use the server: the Host check, the same-origin rule for changes, and the token.

Every server here is contacted through 127.0.0.1 only, including the one bound
to 0.0.0.0; the other names (evil.example) appear only in headers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from .support.browser import card, completed_card, upload_in_page
from .support.checks import assert_error, files_in
from .support.clips import Clips, hanging_ffmpeg
from .support.failing import failed_task
from .support.internals import Settings
from .support.servers import MakeClient, Server, running_server
from .support.uploading import (BROWSER_ACCEPT, AppClient, form_upload, list_tasks, upload,
                                upload_ok, wait_for_state)

EVIL = "http://evil.example"
REACT = "http://localhost:3000"  # the original front end, on its own origin


def new_token() -> str:
    return secrets.token_urlsafe(24)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the Host check -----------------------------------------------------------------

async def test_other_host_names_are_refused_on_loopback(make_client: MakeClient,
                                                        tmp_path: Path) -> None:
    client = await make_client()
    for path in ("/tasks", "/", "/healthz"):
        refused = await client.get(path, headers={"Host": "evil.example"})
        assert refused.status == 403, path
        error = (await refused.json())["error"]
        assert error["code"] == "unknown_host" and "--allow-host" in error["message"]
    refused = await client.delete("/tasks/" + "0" * 32, headers={"Host": "evil.example:8080"})
    assert refused.status == 403
    for host in ("localhost", "localhost:8080", "LocalHost.", "127.0.0.1", "127.0.0.1:9",
                 "[::1]", "[::1]:8080"):
        assert (await client.get("/tasks", headers={"Host": host})).status == 200, host

    proxied = await make_client(data_dir=tmp_path / "proxied", allowed_hosts=("evil.example",))
    assert (await proxied.get("/tasks", headers={"Host": "evil.example"})).status == 200
    assert (await proxied.get("/tasks", headers={"Host": "evil.example:443"})).status == 200
    assert (await proxied.get("/tasks", headers={"Host": "other.example"})).status == 403
    assert (await proxied.get("/tasks", headers={"Host": "localhost"})).status == 200

    # elsewhere the token guards every name, unless names are listed: then only those
    token = new_token()
    anywhere = await make_client(data_dir=tmp_path / "anywhere", host="0.0.0.0", token=token)
    assert (await anywhere.get("/tasks", headers={"Host": "lan-name", **bearer(token)})).status == 200
    listed = await make_client(data_dir=tmp_path / "listed", host="0.0.0.0", token=token,
                               allowed_hosts=("video.example",))
    assert (await listed.get("/tasks", headers={"Host": "video.example", **bearer(token)})
            ).status == 200
    assert (await listed.get("/tasks", headers={"Host": "lan-name", **bearer(token)})).status == 403


# -- the same-origin rule for changes -------------------------------------------------

CROSS_SITE = {
    "origin": {"Origin": EVIL},
    "referer only": {"Referer": f"{EVIL}/cute-cats.html"},
    "opaque origin": {"Origin": "null"},  # a sandboxed frame or a file: page
    "origin wins over referer": {"Origin": EVIL, "Referer": "http://127.0.0.1/"},
    # a page that hides both (Referrer-Policy, a form's rel=noreferrer): the browser still says
    "fetch metadata only, cross-site": {"Sec-Fetch-Site": "cross-site"},
    "fetch metadata only, same-site": {"Sec-Fetch-Site": "same-site"},
    "same-site, another origin": {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3001"},
}


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
async def test_cross_site_changes_are_refused(make_client: MakeClient, clips: Clips,
                                              settings: Settings, tmp_path: Path,
                                              headers: dict[str, str]) -> None:
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)), cors_origins=(REACT,))
    task = (await failed_task(client, clips, settings.layout.uploads_dir)).task
    before = (files_in(settings.layout.uploads_dir), files_in(settings.layout.outputs_dir),
              await (await client.get("/tasks")).json())
    task_url = f"/tasks/{task['id']}"
    form = {"Accept": BROWSER_ACCEPT, **headers}
    attempts: dict[str, Callable[[], Awaitable[aiohttp.ClientResponse]]] = {
        "upload": lambda: upload(client, clips.small(), "480", headers=headers),
        "form upload": lambda: form_upload(client, clips.small(), "480", headers),
        "delete": lambda: client.delete(task_url, headers=headers),
        "form delete": lambda: client.post(f"{task_url}/delete", headers=headers,
                                           allow_redirects=False),
        "retry": lambda: client.post(f"{task_url}/retry", headers=headers),
        "form retry": lambda: client.post(f"{task_url}/retry", headers=form, allow_redirects=False),
        # any method that could change something, on any path: tus's PATCH, for one
        "patch": lambda: client.patch("/files/anything", headers=headers),
    }
    for name, attempt in attempts.items():
        response = await attempt()
        assert response.status == 403, (name, await response.text())
        assert (await response.json())["error"]["code"] == "cross_site", name
    after = (files_in(settings.layout.uploads_dir), files_in(settings.layout.outputs_dir),
             await (await client.get("/tasks")).json())
    assert after == before
    # reading is not changing: another site's GET still gets its answer (it cannot read it)
    assert (await client.get("/tasks", headers=headers)).status == 200


def allowed_sources(client: AppClient) -> dict[str, dict[str, str]]:
    own = f"http://127.0.0.1:{client.server.port}"
    return {"no origin (curl)": {}, "own page": {"Origin": own},
            "own page, referer only": {"Referer": f"{own}/"},
            "cors origin": {"Origin": REACT}, "cors origin, referer only": {"Referer": f"{REACT}/app"},
            "own page, fetch metadata": {"Origin": own, "Sec-Fetch-Site": "same-origin"},
            "same-origin, no origin": {"Sec-Fetch-Site": "same-origin"},
            "typed by the visitor": {"Sec-Fetch-Site": "none"},
            "cors origin, same-site": {"Origin": REACT, "Sec-Fetch-Site": "same-site"},
            "cors origin, cross-site": {"Origin": REACT, "Sec-Fetch-Site": "cross-site"}}


async def test_same_site_curl_and_cors_origins_may_change(make_client: MakeClient, clips: Clips,
                                                          settings: Settings) -> None:
    client = await make_client(job_timeout=0.001, cors_origins=(REACT,))
    for name, headers in allowed_sources(client).items():
        created = await upload(client, clips.small(), "480", headers=headers)
        assert created.status == 201, (name, await created.text())
        task = await wait_for_state(client, (await created.json())["id"], "FAILED")
        retried = await client.post(f"/tasks/{task['id']}/retry", headers=headers)
        assert retried.status == 200, name
        await wait_for_state(client, task["id"], "FAILED")
        deleted = await client.delete(f"/tasks/{task['id']}", headers=headers)
        assert deleted.status == 200, name

        posted = await form_upload(client, clips.small(), "480", headers)
        assert posted.status == 200 and posted.url.path == "/", name  # 303 to the page, followed
        (task,) = await (await client.get("/tasks")).json()
        await wait_for_state(client, task["id"], "FAILED")
        form_retry = await client.post(f"/tasks/{task['id']}/retry", allow_redirects=False,
                                       headers={"Accept": BROWSER_ACCEPT, **headers})
        assert form_retry.status == 303, name
        await wait_for_state(client, task["id"], "FAILED")
        form_delete = await client.post(f"/tasks/{task['id']}/delete", headers=headers,
                                        allow_redirects=False)
        assert form_delete.status == 303, name
        assert await (await client.get("/tasks")).json() == []
    assert files_in(settings.layout.uploads_dir) == files_in(settings.layout.outputs_dir) == []


async def test_default_ports_name_the_same_origin(make_client: MakeClient, clips: Clips) -> None:
    """A port the scheme would use anyway may be written on either side, or left out."""
    client = await make_client(allowed_hosts=("proxy.example",))
    same = [{"Host": "localhost", "Origin": "http://localhost:80"},
            {"Host": "localhost:80", "Origin": "http://localhost"},
            {"Host": "proxy.example:443", "Origin": "https://proxy.example"},
            {"Host": "proxy.example", "Origin": "https://proxy.example:443"},
            {"Host": "proxy.example", "Referer": "https://proxy.example:443/"},
            {"Host": "[::1]", "Origin": "http://[::1]:80"}]
    for headers in same:
        task = await upload_ok(client, clips.small(), "480")
        deleted = await client.delete(f"/tasks/{task['id']}", headers=headers)
        assert deleted.status == 200, (headers, await deleted.text())
    task = await upload_ok(client, clips.small(), "480")
    other = [{"Host": "localhost", "Origin": "http://localhost:8080"},
             {"Host": "localhost:8080", "Origin": "http://localhost"},
             {"Host": "proxy.example:443", "Origin": "http://proxy.example"},  # 80, not 443
             {"Host": "proxy.example", "Origin": "http://proxy.example:443"},
             {"Host": "localhost:80", "Origin": "https://localhost"}]
    for headers in other:
        refused = await client.delete(f"/tasks/{task['id']}", headers=headers)
        await assert_error(refused, 403, "cross_site")
    assert [t["id"] for t in await list_tasks(client)] == [task["id"]]


async def test_react_client_with_cors_origin(make_client: MakeClient, clips: Clips,
                                             tmp_path: Path) -> None:
    """The original front end's calls, with Origin as its browser sends them, on loopback and
    on a server that asks for a token (the front end then adds the bearer header)."""
    token = new_token()
    for client, auth in ((await make_client(cors_origins=(REACT,)), {}),
                         (await make_client(cors_origins=(REACT,), token=token,
                                            data_dir=tmp_path / "with-token"), bearer(token))):
        # a preflight never carries credentials, so it is answered without the token
        preflight = await client.options("/tasks/" + "0" * 32, headers={
            "Origin": REACT, "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status == 204
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        form = aiohttp.FormData()  # the original client sends only the file
        with clips.small().open("rb") as video:
            form.add_field("video", video, filename="clip.mp4")
            created = await client.post("/videos/upload", data=form,
                                        headers={"Origin": REACT, **auth})
        assert created.status == 201 and created.headers["Access-Control-Allow-Origin"] == REACT
        task = await created.json()
        listed = await client.get("/tasks", headers={"Origin": REACT, **auth})
        assert [t["id"] for t in await listed.json()] == [task["id"]]
        deleted = await client.delete(f"/tasks/{task['id']}", headers={"Origin": REACT, **auth})
        assert deleted.status == 200 and deleted.headers["Access-Control-Allow-Origin"] == REACT
    # without the token the front end gets a 401 it can read, not an opaque failure
    refused = await client.get("/tasks", headers={"Origin": REACT})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == REACT


# -- the token ------------------------------------------------------------------------

async def test_token_is_required_when_set(make_client: MakeClient, clips: Clips,
                                          settings: Settings) -> None:
    token = new_token()
    client = await make_client(token=token)
    for method, path in (("GET", "/tasks"), ("GET", "/tasks/" + "0" * 32), ("DELETE", "/tasks/x"),
                         ("GET", "/static/app.js")):
        refused = await client.request(method, path)
        assert refused.status == 401, path
        assert (await refused.json())["error"]["code"] == "token_required"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await upload(client, clips.small())).status == 401
    assert files_in(settings.layout.uploads_dir) == []
    page = await client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status == 401 and page.content_type == "text/html"
    assert "?token=" in await page.text()
    for wrong in (f"Bearer {token[:-1]}", f"Bearer {token}x", token, f"Basic {token}", "Bearer "):
        assert (await client.get("/tasks", headers={"Authorization": wrong})).status == 401, wrong

    created = await upload(client, clips.small(), headers=bearer(token))
    assert created.status == 201
    task_id = (await created.json())["id"]
    assert (await client.get(f"/tasks/{task_id}", headers=bearer(token))).status == 200
    assert (await client.get(f"/tasks/{task_id}", headers={
        "Authorization": f"bearer {token}"})).status == 200  # the scheme is case-insensitive

    # the printed link: a cookie, and on to the same address without the token in it
    assert (await client.get(f"/?token={token}x", headers={"Accept": BROWSER_ACCEPT})).status == 401
    link = await client.get(f"/?token={token}", allow_redirects=False)
    assert link.status == 303 and link.headers["Location"] == "/"
    cookie = link.headers["Set-Cookie"]
    assert f"video_async_token={token}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    kept = await client.get(f"/tasks/{task_id}/thumbnail?token={token}&x=1", allow_redirects=False)
    assert kept.headers["Location"] == f"/tasks/{task_id}/thumbnail?x=1"
    # the client's cookie jar now holds it, as a browser's would
    assert (await client.get("/tasks")).status == 200
    assert (await client.get("/")).status == 200


async def test_a_host_reachable_by_others_needs_a_token_or_a_deliberate_no(
        make_client: MakeClient) -> None:
    with pytest.raises(ValueError, match="token"):
        await make_client(host="0.0.0.0")
    generated = Settings.from_args(["--host", "0.0.0.0"], environ={})
    assert len(generated.token) >= 32
    assert generated.token != Settings.from_args(["--host", "0.0.0.0"], environ={}).token
    assert generated.token not in repr(generated)  # a logged Settings never shows it
    # a generated token can be pasted after --token as it is: it never begins with '-'
    # (a URL-safe one did about once in 64)
    tokens = [Settings.from_args(["--host", "0.0.0.0"], environ={}).token for _ in range(300)]
    assert not any(token.startswith("-") for token in tokens)
    assert Settings.from_args(["--host", "0.0.0.0", "--no-token"], environ={}).token == ""
    assert Settings.from_args([], environ={}).token == ""  # loopback: none
    assert Settings.from_args(["--token", "abc123"], environ={}).token == "abc123"
    from_env = Settings.from_args(["--host", "0.0.0.0"], environ={"VIDEO_ASYNC_TOKEN": "from-env"})
    assert from_env.token == "from-env"
    assert Settings.from_args(["--allow-host", "a.example", "--allow-host", "b.example"],
                              environ={}).allowed_hosts == ("a.example", "b.example")
    assert Settings.from_args([], environ={"VIDEO_ASYNC_ALLOW_HOST": "a.example, b.example"}
                              ).allowed_hosts == ("a.example", "b.example")
    for argv in (["--token", "abc", "--no-token"], ["--token", "has space"]):
        with pytest.raises(SystemExit, match="video-async: "):
            Settings.from_args(argv, environ={})


async def test_healthz_shows_counts_only_without_the_token(make_client: MakeClient, clips: Clips,
                                                           settings: Settings) -> None:
    token = new_token()
    (settings.layout.outputs_dir).mkdir(parents=True)
    (settings.layout.outputs_dir / "left-behind.mp4").write_bytes(b"")  # found at start, named in /healthz
    client = await make_client(token=token)
    created = await upload(client, clips.small(), "480", filename="holiday.mp4",
                           headers=bearer(token))
    task_id = (await created.json())["id"]
    await wait_for_state(client, task_id, "COMPLETED", headers=bearer(token))

    full = await client.get("/healthz", headers=bearer(token))
    assert "left-behind.mp4" in await full.text() and "ffmpeg" in await full.json()
    counts = await client.get("/healthz")
    assert counts.status == 200
    text = await counts.text()
    for secret in ("left-behind", task_id, "holiday", str(settings.data_dir), "ffmpeg"):
        assert secret not in text
    health = await counts.json()
    assert health["status"] == "ok" and health["tasks"]["COMPLETED"] == 1
    assert health["uploads_in_progress"] == 0 and health["jobs_running"] == 0
    assert health["mode"] == "in-process" and health["queue"] is None


# -- the real program -----------------------------------------------------------------

async def printed_link(server: Server) -> str:
    """The page link with its token, as start-up prints it for this machine."""
    found = await server.printed(rf"^\s+(http://127\.0\.0\.1:{server.port}/\?token=[\w.~-]+)$")
    return found.group(1)


async def test_reachable_server_prints_its_link_and_lets_in_only_with_the_token(
        browser: Browser, clips: Clips, tmp_path: Path) -> None:
    """Bound to every interface (as on a LAN), but contacted through 127.0.0.1 only."""
    async with running_server(tmp_path / "data", "--host", "0.0.0.0") as server:
        link = await printed_link(server)
        token = link.rpartition("=")[2]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/tasks") as refused:
                assert refused.status == 401
            async with session.get(f"{server.url}/", headers={"Accept": BROWSER_ACCEPT}) as note:
                assert note.status == 401 and "?token=" in await note.text()
            async with session.get(f"{server.url}/tasks", headers=bearer(token)) as listed:
                assert listed.status == 200 and await listed.json() == []

        # a browser without the link sees where to find it
        stranger = await (await browser.new_context()).new_page()
        answer = await stranger.goto(f"{server.url}/")
        assert answer is not None and answer.status == 401
        await expect(stranger.locator("h1")).to_contain_text("access token")

        # with it: the cookie, the bare address, and a page that works
        context = await browser.new_context()
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        await page.goto(link)
        assert page.url == f"{server.url}/"
        (cookie,) = await context.cookies()
        assert cookie["value"] == token and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert await page.evaluate("document.cookie") == ""  # no script can read it
        clip = tmp_path / "beach.mp4"
        clip.write_bytes(clips.small().read_bytes())
        await upload_in_page(page, clip)
        task = await completed_card(page, clip.name)
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await task.locator("form.delete button").click()
        await expect(task).to_have_count(0)
        assert problems == []

        # the token reaches the output in the printed links only, never in the access log
        await server.printed(r"GET /\?token=")  # the access log's line for the link
        lines = [line for line in server.output().splitlines() if token in line]
        assert lines and all(line.strip().startswith("http://") for line in lines), lines


async def test_token_on_loopback_and_bearer_for_scripts(clips: Clips, tmp_path: Path) -> None:
    token = "-" + new_token()  # one that begins with '-', as a random one sometimes does
    async with running_server(tmp_path / "data", f"--token={token}") as server:
        assert await printed_link(server) == f"{server.url}/?token={token}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/tasks") as refused:
                assert refused.status == 401
            form = aiohttp.FormData()
            with clips.small().open("rb") as video:
                form.add_field("video", video, filename="clip.mp4")
                async with session.post(f"{server.url}/videos/upload", data=form,
                                        headers=bearer(token)) as created:
                    assert created.status == 201
            async with session.get(f"{server.url}/tasks", headers=bearer(token)) as listed:
                assert len(await listed.json()) == 1


async def test_no_token_warns_loudly(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", "--host", "0.0.0.0", "--no-token") as server:
        assert "NO TOKEN" in server.output() and "anyone" in server.output()
        assert "?token=" not in server.output()
        async with aiohttp.ClientSession() as session, \
                session.get(f"{server.url}/tasks") as listed:
            assert listed.status == 200


async def test_page_on_loopback_needs_no_token(browser: Browser, clips: Clips,
                                               tmp_path: Path) -> None:
    """Nothing changes on loopback: the page uploads, deletes, and posts its plain forms."""
    async with running_server(tmp_path / "data") as server:
        assert "token" not in server.output()
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{server.url}/")
        await upload_in_page(page, clips.small())
        task = await completed_card(page, clips.small().name)
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        async with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
            await task.locator("form.delete button").click()
        assert (await deleted.value).status == 200

        plain = await (await browser.new_context(java_script_enabled=False)).new_page()
        await plain.goto(f"{server.url}/")
        await upload_in_page(plain, clips.small())
        await expect(plain).to_have_url(f"{server.url}/")
        await expect(card(plain, clips.small().name)).to_have_count(1)
        await plain.locator("li.task form.delete button").click()
        await expect(plain).to_have_url(f"{server.url}/")
        await expect(plain.locator("li.task")).to_have_count(0)


async def test_help_explains_the_access_flags() -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "video_async", "--help",
                                                stdout=asyncio.subprocess.PIPE,
                                                env={**os.environ, "VIDEO_ASYNC_TOKEN": "sekrit-value"})
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    text = " ".join(out.decode().split())
    for words in ("--allow-host NAME", "--token TOKEN", "--no-token", "Authorization: Bearer",
                  "VIDEO_ASYNC_NO_TOKEN"):
        assert words in text, words
    assert "sekrit-value" not in text

