"""Resumable uploads: the tus 1.0.0 protocol under /files, a wing in layers, as tusd has them.

- `protocol.py`: what every request shares (one middleware: the method override and
  the version check; one hook: the version header on every answer), the protocol's
  errors, each named once with its status, and its headers read;
- `handlers.py`: one handler per verb (OPTIONS, POST, HEAD, PATCH, DELETE), which
  hand each finished upload to the core's intake (routes/intake.py, `accept`);
- `uploads.py`: the upload store, the unfinished uploads on disk and in memory;
- `wing.py`: `setup(app)`, the one call that plugs all of it into the app.

This file imports none of them, so that a module that needs only the store (the
limits and recovery wings) does not load the handlers.
"""
