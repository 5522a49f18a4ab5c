# The two commands of the README:
#   make demo   set up, build the synthetic demo dataset and its Semantic-ID index, print its stats
#   make test   set up and run the whole test suite
# Both create .venv on first use (Python 3.11+, pip); nothing needs installing by hand.

PYTHON ?= python3
VENV   ?= .venv
# CPU build of torch (on disk on these machines); on a GPU host: make TORCH_SPEC=torch ...
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(EXTRAS)
DEMO   ?= runs/demo
SHARED ?= ../shared/data

.PHONY: demo test setup lint bench-index real-data clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

demo: $(STAMP)
	$(BIN)/radgr data synth --out $(DEMO)/data --items 2000 --sessions 5000 --seed 0 --overwrite
	$(BIN)/radgr index build --data $(DEMO)/data --out $(DEMO)/index --codebooks 32,32,32
	$(BIN)/radgr index lookup $(DEMO)/index --sku S0000001

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench-index: $(STAMP)
	$(BIN)/python bench/index_scale.py

# Datasets and indexes of the real public data (README: "Real data").
real-data: $(STAMP)
	$(BIN)/radgr data homedepot --src $(SHARED)/homedepot/train.csv.zip --out runs/homedepot/data --overwrite
	$(BIN)/radgr index build --data runs/homedepot/data --out runs/homedepot/index --codebooks 256,256,256
	$(BIN)/radgr data amazon --src $(SHARED)/amazon-scientific --out runs/amazon/data --overwrite
	$(BIN)/radgr index build --data runs/amazon/data --out runs/amazon/index --codebooks 64,64,64

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
