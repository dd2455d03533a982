# Two commands for a fresh machine: `make run` (dashboard on the embedded model) and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= smollm2-135m
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test lint test-slow install fetch browser axe postgres train lens bench load clean atlas artifacts

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser tests (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# axe-core for the accessibility check (tests/web/test_browser_pages.py evaluates .axe/node_modules/axe-core/axe.min.js
# into every page): installed once from the npm registry like Chromium from Debian, so no test fetches anything.
AXE_VERSION ?= 4.14.1
AXE_JS := .axe/node_modules/axe-core/axe.min.js
axe: $(AXE_JS)
$(AXE_JS):
	@command -v npm >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null)
	npm install --prefix .axe --no-save --no-audit --no-fund --no-package-lock --silent axe-core@$(AXE_VERSION)

# Debian's PostgreSQL for the store tests (tests/pg_server.py runs initdb + pg_ctl in a temporary directory), and
# nginx for the two-replicas-behind-a-proxy test (tests/deploy/test_proxy.py runs docker/nginx.conf).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)
	@command -v nginx >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null)

fetch: $(STAMP)
	$(BIN)/python -m app fetch --profile $(PROFILE)

run: fetch
	$(BIN)/python -m app serve --profile $(PROFILE) --host $(HOST) --port $(PORT)

test: fetch browser axe postgres
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# ruff (pyflakes, isort, bugbear, pycodestyle errors) and mypy on the engine and the API; config in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check app tests bench && $(BIN)/mypy app/engine app/api

test-slow: fetch browser axe postgres
	$(BIN)/python -m pytest -q -m "slow"

# The feature atlas (corpus context for every feature): data/atlas/<profile> for the embedded profile; then the
# map of both SAEs' features (layout.npz beside it; ~2-3 min for 18k features on 2 cores).
atlas: fetch
	$(BIN)/python -m app atlas --profile $(PROFILE)
	$(BIN)/python -m app map --profile $(PROFILE)

# Everything derived from the SAE pair, in order (app/cli/artifacts.py): the atlas (its co-firing sample is what the split
# maps read), the map, the France table (docs/france-table.txt), the steering experiment across concepts (each anchored
# by its own Discover run: docs/steering-experiment-*.{json,txt}, .md, .svg), the " Rome" attribution report; then
# docs/artifacts.json (the pair's fingerprint and each file's sha256; `python -m app.cli.artifacts --check`). Hours on 2 CPU
# cores; some steps: ARTIFACTS_ARGS="--steps france,experiment,attribution"; `--dry-run` prints the commands.
artifacts: fetch
	nice -n 10 $(BIN)/python -m app.cli.artifacts --profile $(PROFILE) $(ARTIFACTS_ARGS)

train: $(STAMP)
	$(BIN)/python -m app.training.saes --profile $(PROFILE)

# The tuned lens of the embedded model (data/lens/smollm2-135m: translators + held-out KL per layer in kl.json);
# ~25 min wall (4.5 CPU-min) on 1 thread of the shared 2 cores; more text: LENS_ARGS="--corpus-windows 400 --chat 120".
# Then `make lens LENS_ARGS=--eval-only` adds the KL on app.training.chat's held-out shards (data/chat/<profile>).
lens: $(STAMP)
	nice -n 10 $(BIN)/python -m app.training.tuned_lens --profile $(PROFILE) $(LENS_ARGS)

# Ratios against in-process baselines; ends with one summary table (bench/summary.py), also written as
# bench/results/<UTC time>-<commit>[-BENCH_LABEL].json. Raw per-benchmark JSON goes to bench/results/raw/.
# Lines time prompts and pages not seen before unless named "cached". BENCH_BASELINE=DIR (a checkout of the code to
# compare with, data/models linked) adds cold page loads of both servers and the server's peak RSS (bench/pages.py),
# and runs its server in turns with ours under the same 8 users (bench/serve.py: throughput and p95 vs before).
BENCH_RAW := bench/results/raw
bench: fetch
	mkdir -p $(BENCH_RAW)
	$(BIN)/python bench/analyze.py --json $(BENCH_RAW)/analyze.json
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/discover.py --json $(BENCH_RAW)/discover.json
	$(BIN)/python bench/batching.py --json $(BENCH_RAW)/batching.json
	$(BIN)/python bench/serve.py --json $(BENCH_RAW)/serve.json $(if $(BENCH_BASELINE),--baseline-root $(BENCH_BASELINE))
	@if [ -n "$(BENCH_BASELINE)" ]; then $(BIN)/python bench/pages.py --baseline-root $(BENCH_BASELINE) --json $(BENCH_RAW)/pages.json; fi
	$(BIN)/python bench/summary.py $(BENCH_RAW)

# Long load runs (8 users x 120 s with a discovery job, then 40 users x 60 s) against uvicorn on 127.0.0.1, tiny
# profile; figures in test-artifacts/reliability/load_full.json. Short versions run in `make test`.
# Locust (same request mix): `$(BIN)/python bench/load/serve_tiny.py 8765 &` then
#   `$(BIN)/locust -f bench/load/locustfile.py --headless -u 8 -r 8 -t 120s --host http://127.0.0.1:8765`
load: $(STAMP)
	$(BIN)/pip install -q -e ".[load]"
	$(BIN)/python -m pytest -p no:xdist -q -m load tests/reliability/test_load.py

clean:
	rm -rf $(VENV) data/cache
