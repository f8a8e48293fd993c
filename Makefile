# palm-studio: the two set-up commands are `make studio` and `make test`.
# Both create/refresh the virtual environment in .venv/ and install what is missing
# (system packages through tools/system_deps.sh, Python packages through pip).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build from this machine's disk here; a normal (CUDA) build from PyPI elsewhere.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: studio test venv system-deps bench clean

studio: system-deps venv
	$(VENV)/bin/palm-studio

test: system-deps venv
	bash tools/node_deps.sh
	$(PY) -m pytest $(PYTEST_ARGS)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

system-deps:
	bash tools/system_deps.sh

bench: venv
	$(PY) bench/render.py --quick

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
