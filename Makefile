# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WEB := src/flowcast/web

.PHONY: demo test venv web system-demo system-test bench clean

demo: system-demo venv web
	$(BIN)/flowcast up

test: system-test venv web
	$(BIN)/pytest -q

bench: venv web
	scripts/system-deps.sh bench
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python -m benchmarks.latency

system-demo:
	scripts/system-deps.sh demo

system-test:
	scripts/system-deps.sh test

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

web: $(WEB)/node_modules/.installed $(WEB)/pixelstreaming.bundle.js

$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Epic's Pixel Streaming frontend (npm) + our page script, bundled by the pinned esbuild.
# The output is byte-for-byte reproducible from the lock file, so it is built, not committed.
$(WEB)/pixelstreaming.bundle.js: $(WEB)/pixelstreaming.js $(WEB)/timecode.js $(WEB)/node_modules/.installed
	cd $(WEB) && node_modules/.bin/esbuild pixelstreaming.js --bundle --format=iife --target=es2020 \
		--log-level=warning --outfile=pixelstreaming.bundle.js

clean:
	rm -rf $(VENV) $(WEB)/node_modules
