# Two commands: `make demo` (the quick-start study, ends in a report) and `make test` (the tests).
# Both create .venv on first use; a stamp file keeps a second run from reinstalling anything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install
# The CPU wheel of torch 2.13.0 is installed first so that `torch>=2.4` is already satisfied
# and pip never pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test install lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> setting up $(VENV) (first run only)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]"
	@bash launch/install_ffcv.sh $(BIN)
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/twoworlds demo

# Chromium (a system package, for the test that renders the report) is checked on every run; only the
# tests need it, so `make demo` does not install it.
test: $(STAMP)
	@bash launch/install_chromium.sh
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
