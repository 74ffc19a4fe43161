# Two commands: `make demo` (the quick-start study, ends in a report) and `make test` (the tests; `make
# test-slow` for the long end-to-end ones, which CI runs too).
# Both create .venv on first use; a stamp file keeps a second run from reinstalling anything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install
# torch 2.13.0 is installed first, so that the project's `torch>=2.4` is already satisfied and pip adds no
# other torch. Which build of 2.13.0 is pip's choice for the platform (a CPU wheel on disk where there is one,
# as on the machines this was built on); to choose: TORCH_PIN="torch==2.13.0 --index-url <index>".
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test test-slow install lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> setting up $(VENV) (first run only)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev]"
	@bash launch/install_ffcv.sh $(BIN)
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/twoworlds demo

# Chromium (a system package, for the test that renders the report) is checked on every run; only the
# tests need it, so `make demo` does not install it.
# `make test`: the fast suite (under 10 minutes on 2 cores). `make test-slow`: the long end-to-end runs
# (every shipped study's smoke variant through Ray, retries, resumes, DDP, a second Ray version in a scratch
# venv). CI (.ci/run) runs both, one after the other.
test: $(STAMP)
	@bash launch/install_chromium.sh
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
