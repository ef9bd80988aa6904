# The two commands of the quickstart are `make run` and `make test`; each sets up what is missing first.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; \
	done)
VENV := .venv/bin
MISSION ?= missions/product_launch.yaml
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-unit lint bench

setup:
	@$(or $(PYTHON),python3) controlplane/_setup.py

run: setup
	$(VENV)/controlplane run $(MISSION)

test: setup lint
	$(VENV)/python -m pytest tests

test-unit: setup
	$(VENV)/python -m pytest tests/unit

lint: setup
	$(VENV)/ruff check .
	$(VENV)/mypy

bench: setup .venv-crewai/.installed
	$(VENV)/python benchmarks/bench_serving.py --quick --json runs/bench_serving.json
	$(VENV)/python benchmarks/bench_scheduling.py --quick --json runs/bench_scheduling.json
	$(VENV)/python benchmarks/bench_memory.py --quick --json runs/bench_memory.json
	$(VENV)/python benchmarks/bench_mission_log.py --quick --json runs/bench_mission_log.json
	$(VENV)/python benchmarks/bench_agents.py --quick --json runs/bench_agents.json
	$(VENV)/python benchmarks/bench_governance.py --quick --json runs/bench_governance.json
	$(VENV)/python benchmarks/bench_kill_switch.py --quick --json runs/bench_kill_switch.json
	$(VENV)/python benchmarks/bench_observability.py --quick --json runs/bench_observability.json
	$(VENV)/python benchmarks/bench_scale.py --quick --json runs/bench_scale.json
	$(VENV)/python benchmarks/bench_chaos.py --quick --json runs/bench_chaos.json
	$(VENV)/python benchmarks/bench_fleet.py --quick --json runs/bench_fleet.json
	$(VENV)/python benchmarks/bench_vs_frameworks.py --quick --json runs/bench_vs_frameworks.json
	$(VENV)/python benchmarks/bench_router_path.py --json runs/bench_router_path.json

# CrewAI, a peer of bench_vs_frameworks.py, cannot share .venv (benchmarks/requirements-crewai.txt says why).
.venv-crewai/.installed: benchmarks/requirements-crewai.txt
	$(or $(PYTHON),python3) -m venv .venv-crewai
	.venv-crewai/bin/pip install --quiet -r benchmarks/requirements-crewai.txt
	@touch $@
