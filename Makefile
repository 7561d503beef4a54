# Every target creates .venv on first use; `make run` and `make test` are all you need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test screenshot bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m video_async $(ARGS)

# Asyncio debug mode and warnings-as-errors (see pyproject) catch un-awaited
# coroutines and slow callbacks that would otherwise pass silently.
test: $(STAMP)
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The README's picture: the page with tasks in every state, from the browser test.
screenshot: $(STAMP)
	VIDEO_ASYNC_SCREENSHOT=docs/screenshot.png $(BIN)/python -m pytest -q tests/test_browser.py -k screenshot

# The performance figures of issue 5, printed and written to bench/results.json
# (about 2 minutes; the first run also generates its clips into bench/cache/).
bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
