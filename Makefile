# The two commands of the README: `make run` and `make test`. Everything either needs
# (virtualenv, Python packages, Debian packages for the tests) is installed from here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# Real servers the tests start on loopback (InfluxDB-API store, MQTT broker), the browser
# for HMI tests and a CJK font so its screenshots show the zh-CN labels.
APT_TEST_PACKAGES := victoria-metrics mosquitto chromium fonts-wqy-microhei

# OPC UA clients written by others (node-opcua) for the interop tests, pinned by the lock file.
NODE_DIR   := tests/interop
NODE_STAMP := $(NODE_DIR)/node_modules/.installed-stamp

.PHONY: run run-steel test lint bench system-deps node-deps web-vendor clean

# The HMI's chart library (uPlot, MIT) from npm, pinned by web/vendor/package-lock.json. Its
# built files are committed under web/static/vendor/, so `make run` needs neither npm nor
# internet (the control room has none); run this target only to update them.
VENDOR_DIR    := web/vendor
VENDOR_STATIC := web/static/vendor

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/carbonscada run

# The second demo: a steel works (blast furnace, lime kiln, power plant), HMI on :8081.
run-steel: $(STAMP)
	$(BIN)/carbonscada run -c config/demo-steel.yaml

system-deps:
	@missing=""; for p in $(APT_TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# node and npm come with the machine or from Debian (nodejs, npm).
$(NODE_STAMP): $(NODE_DIR)/package-lock.json | system-deps
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

node-deps: $(NODE_STAMP)

web-vendor:
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }
	cd $(VENDOR_DIR) && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR_STATIC)
	cp $(VENDOR_DIR)/node_modules/uplot/dist/uPlot.iife.min.js \
	   $(VENDOR_DIR)/node_modules/uplot/dist/uPlot.min.css $(VENDOR_STATIC)/
	cp $(VENDOR_DIR)/node_modules/uplot/LICENSE $(VENDOR_STATIC)/uPlot.LICENSE
	node -p '"uplot " + require("./$(VENDOR_DIR)/node_modules/uplot/package.json").version' \
	  > $(VENDOR_STATIC)/uPlot.VERSION

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Most tests wait on sped-up plant hours, not on the CPU: two workers halve the suite
# (1139 s in one process at b773f04). A file stays on one worker, so its module fixtures
# start once. Tests marked `solo` time real minutes under CPU load and run alone after.
test: $(STAMP) system-deps node-deps lint
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not solo" tests
	$(BIN)/pytest -q -m solo tests
	$(BIN)/pytest -q bench --benchmark-disable

bench: $(STAMP)
	$(BIN)/pytest bench --benchmark-only --benchmark-columns=min,median,mean,stddev,rounds

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .benchmarks $(NODE_DIR)/node_modules \
	  $(VENDOR_DIR)/node_modules
