# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine with Python
# >= 3.10: they create .venv and install the project into it first.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# The CPU build of torch this project's CI pins; on a GPU cluster pass TORCH=torch to get yours.
TORCH ?= torch==2.13.0

.PHONY: demo test fuzz slurm
$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[train,test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/make_tiny_model.py --out examples/models/tiny
	$(VENV)/bin/mixc check examples/customer_blend.mix
	$(VENV)/bin/mixc plan examples/customer_blend.mix
	$(VENV)/bin/mixc run examples/customer_blend.mix --cluster local

# The tests submit to a real single-node Slurm: slurm_up.sh installs (apt, as root) and starts it.
slurm:
	bash scripts/slurm_up.sh

test: $(VENV)/.installed slurm
	$(PY) -m pytest -q

fuzz: $(VENV)/.installed
	$(PY) scripts/fuzz.py --cases 100000
