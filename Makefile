# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_ROOT ?= demo/data/carla_leaderboard2

.PHONY: venv test lint demo peers clean

venv: $(STAMP)

# Every extra, so that the tests of the trainer, S3, W&B and DALI run (timm only where it imports, see below).
# DALI's wheel must match torch's CUDA: dali-cuda13 (nvidia-dali-cuda130) for a CUDA 13 torch, else dali (CUDA 12;
# its CPU operators need no GPU).
DALI_EXTRA = $$($(PY) -c "import torch; print('dali-cuda13' if (torch.version.cuda or '').startswith('13') else 'dali')")

# timm comes with the torchvision of this torch's release; where that torchvision does not fit this torch build (a
# +cpu torch: 'operator torchvision::nms does not exist'), both go again: never a half-working pair, which would
# break `accelerate launch` (its CLI imports timm). TFv6 then uses its built-in ResNets and says so.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[train,test,bench,s3,wandb]'
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(DALI_EXTRA)]"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[timm]"
	$(PY) -m leadtrain.models.tfv6 || $(PY) -m pip uninstall --quiet --yes timm torchvision
	$(PY) -m leadtrain.models.tfv6
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 --dist loadfile -q

demo: $(STAMP)
	$(PY) scripts/demo.py --root $(DEMO_ROOT)

# The peer loaders of benchmarks.loader_throughput (`--loaders peers`), optional (~1 GB). Not a plain
# `pip install '.[peers]'`: mosaicml-streaming's releases for numpy >= 2.2 pull older xxhash/transformers and a
# torchvision that does not load beside a +cpu torch. This adds them without changing any installed package
# (benchmarks/results/peers.md); FFCV does not build without the system's opencv4 and libturbojpeg.
HAVE = $$($(PY) -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in ('numpy', 'xxhash', 'huggingface_hub')))")
peers: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt $(HAVE) litdata==0.2.76 megatron-energon==7.4.1
	$(PY) -m pip uninstall --quiet --yes torchvision
	$(PY) -m pip install --quiet -c constraints.txt $(HAVE) brotli python-snappy zstd 'transformers>=5'
	$(PY) -m pip install --quiet --no-deps mosaicml-streaming==0.10.0
	$(PY) -c "import litdata, megatron.energon; from benchmarks.loader_throughput.peers import import_streaming; import_streaming(); print('peers installed')"

clean:
	rm -rf demo .pytest_cache
