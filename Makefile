# Every target creates .venv and installs the project into it when needed, so a fresh clone needs only `make`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-metrics ablate app test lint bench docs install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) demo.py

demo-metrics: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) demo_metrics.py

ablate: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) ablate.py

app: $(STAMP)
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) app.py --trust_remote_code

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/bench_giou.py
	$(PY) benchmarks/bench_questions.py
	$(PY) benchmarks/bench_choices.py
	$(PY) benchmarks/bench_conversion.py
	$(PY) benchmarks/bench_checkpoints.py
	$(PY) benchmarks/profile_step.py
	$(PY) benchmarks/bench_training_speed.py

docs: $(STAMP)
	$(PY) -m plum_demo.docs

clean:
	rm -rf outputs .pytest_cache
