"""Test support, one module per job, so each thing is done one way:

- internals: the package's own names the tests use, imported in this one place
- waiting: wait for a condition under a timeout, never a fixed sleep
- clips: generated media, stand-in ffmpegs, and what ffmpeg says about an output
- uploading: upload and wait, through the HTTP API, on a test client or a real server
- checks: the JSON error, nothing left behind, the worker going on
- raw: uploads written by hand on a socket, for the cases no client library sends
- tus: resumable uploads (tus 1.0.0) spoken one request at a time
- failing: a task that has FAILED, and a queue held by a job that runs until deleted
- processes: what runs on the machine, read from /proc
- servers: the app in the test's loop, and `python -m video_async` as its own process
- unit: what the unit tier (`make test-fast`) may not do: open sockets, start processes
"""
