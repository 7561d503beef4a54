# Every target creates .venv on first use; `make run` and `make test` are all you need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
QUEUE_STAMP := $(VENV)/.installed-queue
# What the tests need from the system, as command:Debian-package pairs. This is the
# one place that says so; `make test` installs whatever of it is missing.
SYSTEM_DEPS := chromium:chromium redis-server:redis-server systemd-analyze:systemd

.PHONY: run worker queue-extra test test-fast deps screenshot bench clean

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

# The test extras (pytest, Playwright, ...) only where tests run: `make run` stays small.
$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m video_async $(ARGS)

# The queue mode's packages (SAQ, redis), for `--queue` and for workers: the package is
# on no index, so this is how a clone gets its `queue` extra.
$(QUEUE_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[queue]'
	touch $(QUEUE_STAMP)

queue-extra: $(QUEUE_STAMP)

# A queue worker on this machine (docs/scaling.md), e.g.
# make worker ARGS="--queue redis://HOST:6379/0 --data-dir /mnt/video"
worker: $(QUEUE_STAMP)
	$(BIN)/python -m video_async worker $(ARGS)

# Installs the missing SYSTEM_DEPS with apt-get (as root, or through sudo); where
# neither can, stops with one line naming what to install.
deps:
	@missing=""; \
	for pair in $(SYSTEM_DEPS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else sudo="none"; fi; \
	if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make test needs these system packages; install them, then run it again:$$missing" >&2; \
	  exit 1; \
	fi; \
	echo "installing system packages for the tests:$$missing"; \
	$$sudo apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null

# Asyncio debug mode and warnings-as-errors (see pyproject) catch un-awaited
# coroutines and slow callbacks that would otherwise pass silently.
test: deps $(TEST_STAMP)
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit tier alone, in seconds, to run after every edit: the tests marked `unit`, which
# need no ffmpeg, Redis or browser (so no `deps`) and may open no socket.
test-fast: $(TEST_STAMP)
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

# The README's pictures (docs/screenshot.png, docs/screenshot-phone.png): the page with
# tasks in every state, at 1280 and 390 px wide, from the browser test.
screenshot: deps $(TEST_STAMP)
	VIDEO_ASYNC_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/test_browser.py -k screenshot

# The performance figures (docs/performance.md), printed and written to
# bench/results.json (about 5 minutes; the first run also makes its clips in bench/cache/).
bench: $(TEST_STAMP)
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
