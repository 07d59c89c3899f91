# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_ROOT ?= demo/data/carla_leaderboard2

.PHONY: venv test lint demo clean

venv: $(STAMP)

# Every extra, so that the tests of the trainer, S3, W&B and DALI run. DALI's wheel must match torch's CUDA:
# dali-cuda13 (nvidia-dali-cuda130) for a CUDA 13 torch, else dali (CUDA 12; its CPU operators need no GPU).
DALI_EXTRA = $$($(PY) -c "import torch; print('dali-cuda13' if (torch.version.cuda or '').startswith('13') else 'dali')")

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[train,test,bench,s3,wandb]'
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(DALI_EXTRA)]"
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

clean:
	rm -rf demo .pytest_cache
