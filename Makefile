# proof-registry: every set-up step is here, so a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup venv npm ipfs solc browser artifact vectors test lint typecheck demo gas bench clean node deploy

setup: venv npm ipfs solc

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

npm: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# js-ipfs 0.66.1, the real IPFS daemon the tests start on loopback (a separate npm project: ~300 MB).
ipfs: tools/ipfs/node_modules/.installed
tools/ipfs/node_modules/.installed: tools/ipfs/package.json tools/ipfs/package-lock.json
	npm ci --prefix tools/ipfs --no-audit --no-fund --loglevel=error
	touch $@

# Offline Solidity compiler for py-solc-x / ape (native solc when online, npm solc otherwise). Idempotent.
solc: venv npm
	$(PY) -m registry.chain.toolchain setup-solc

# Chromium for the explorer's browser test (tests/test_explorer.py, driven by Playwright with this binary;
# never `playwright install`). Installs from Debian's packages when missing and running as root; otherwise
# says so and the test skips with that reason.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: /usr/bin/chromium is missing (apt-get install chromium as root): the browser test will skip" >&2; fi

# Rebuild the contract artifact shipped in the package after editing contracts/.
artifact: solc
	$(PY) -m registry.chain.toolchain build-artifact

# Regenerate tests/vectors after changing a protocol rule (review the diff!).
vectors: setup
	$(PY) scripts/make_vectors.py

lint: venv
	$(VENV)/bin/ruff check registry verifier bench scripts tests

typecheck: venv
	$(VENV)/bin/mypy

# The test command of the README and of CI: installs everything, then lint, types and the whole suite.
test: setup browser lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py

gas: setup
	$(PY) -m bench.gas

# The benchmark suite: one table of ratios measured in the same run (README "Benchmarks").
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules tools/ipfs/node_modules .build

# A local JSON-RPC node (Hardhat, offline) and a deployment to it with the dev preset.
node: npm
	npx hardhat node --hostname 127.0.0.1 --port $(or $(PORT),8545)

deploy: solc
	$(VENV)/bin/ape run deploy --network ethereum:local:hardhat --preset dev
