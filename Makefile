# smartfabric: the two commands are `make demo` and `make test`; both set themselves up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: all demo test verilog synth synth-small switch-area reduce-area block-timing logic-depth bench regress-long lint formal docs clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/smartfabric demo --out build/demo

# The simulator models are built first, on all jobs at once; then the tests share them out.
test: $(STAMP)
	$(PY) -m smartfabric.verif.prebuild --jobs $(JOBS)
	$(PY) -m pytest -n $(JOBS) --dist load --maxschedchunk 1 --durations=15 tests

verilog: $(STAMP)
	$(VENV)/bin/smartfabric generate -o build/smartfabric_switch.v

lint: $(STAMP)
	$(VENV)/bin/smartfabric lint

formal: $(STAMP)
	$(VENV)/bin/smartfabric formal

synth: $(STAMP)
	$(VENV)/bin/smartfabric synth --ports 8 --data-width 64 --out build/synth

synth-small: $(STAMP)
	$(VENV)/bin/smartfabric synth --config synth/smallest_2x64.toml --out build/synth_small

switch-area: $(STAMP)
	$(PY) -m smartfabric.synth.switch_area --config synth/lean_8x64.toml --out build/switch_area

block-timing: $(STAMP)
	$(PY) -m smartfabric.synth.block_timing --out build/block_timing

logic-depth: $(STAMP)
	$(PY) -m smartfabric.synth.logic_depth --config synth/smallest_2x64.toml --out build/logic_depth

reduce-area: $(STAMP)
	$(PY) -m smartfabric.synth.reduce_area --inputs 8 --data-width 64 --out build/reduce_area

bench: $(STAMP)
	$(VENV)/bin/smartfabric bench unicast --ports 8 --data-width 64 --payload-beats 4 --json
	$(VENV)/bin/smartfabric bench multicast --ports 8 --data-width 64 --json
	$(VENV)/bin/smartfabric bench allreduce --ports 8 --data-width 64 --bytes 64K --json

regress-long: $(STAMP)
	$(PY) -m smartfabric.verif.prebuild --jobs $(JOBS)
	SMARTFABRIC_LONG=1 $(PY) -m pytest -n $(JOBS) --dist load --maxschedchunk 1 tests

docs: $(STAMP)
	$(PY) -m smartfabric.hdl.regdoc docs/registers.md

clean:
	rm -rf build sim_build .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
