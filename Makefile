# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
OUT    ?= demo
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint env clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,ray]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modelzoos generate digits_cnn_seed --out $(OUT)/digits_cnn_seed --models 100 --epochs 15
	$(VENV)/bin/modelzoos build $(OUT)/digits_cnn_seed --repo $(OUT)/hub
	HF_HUB_OFFLINE=1 $(PY) builders/load_back.py $(OUT)/hub digits_cnn_seed
	HF_HUB_OFFLINE=1 $(VENV)/bin/modelzoos bench digits_cnn_seed --repo $(OUT)/hub --baselines stats,weights,hyperrep \
		--threads 1 --out $(OUT)/bench
	@echo "demo done. The zoo directory: $(abspath $(OUT))/digits_cnn_seed; the repository folder: $(abspath $(OUT))/hub \
	(load_zoo(\"$(abspath $(OUT))/hub\", \"digits_cnn_seed\")); the benchmark: $(abspath $(OUT))/bench/results.md, \
	results.json and the figure $(abspath $(OUT))/bench/bench.png"

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(OUT) .pytest_cache
