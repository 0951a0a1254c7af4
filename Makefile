# Maintainer tasks. Each uses the project's .venv (the README's set-up commands create it).
PY ?= .venv/bin/python
MACHINES ?= build/machines

.PHONY: test world-models test-machines

test:
	$(PY) -m pytest

# Pretrain every preset's world model by llmkit's recipe and ship it in the package
# (llmkit/world/models/); needed after any change to the world generator, a preset or the recipe.
world-models:
	$(PY) scripts/ship_world_models.py

# The suite as other machines run it: each CPU capability PyTorch has kernels for on this CPU
# (default, avx2, and avx512 where the CPU has it), natively, and with one torch thread; then the
# trained outcomes the tests recorded, with the worst margin over the runs.
# Every pass runs even when one fails; the target fails afterwards, naming the passes that did.
test-machines:
	mkdir -p $(MACHINES)
	failed=""; \
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q --junitxml=$(MACHINES)/default.xml || failed="$$failed default"; \
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q --junitxml=$(MACHINES)/avx2.xml || failed="$$failed avx2"; \
	if grep -q avx512f /proc/cpuinfo; then \
		ATEN_CPU_CAPABILITY=avx512 $(PY) -m pytest -q --junitxml=$(MACHINES)/avx512.xml || failed="$$failed avx512"; \
	fi; \
	$(PY) -m pytest -q --junitxml=$(MACHINES)/native.xml || failed="$$failed native"; \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q --junitxml=$(MACHINES)/one-thread.xml || failed="$$failed one-thread"; \
	$(PY) scripts/margins.py $(MACHINES)/*.xml; \
	if [ -n "$$failed" ]; then echo "failed passes:$$failed"; exit 1; fi
