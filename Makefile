# avitalk — two commands on a fresh machine: `make setup`, then `make test`.
# Everything installs into the current Python interpreter (set PYTHON=... to use another, e.g. a venv's).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PIN := -c constraints.txt

.PHONY: setup system-deps test test-fast bench demo clean

setup: system-deps
	$(PIP) install $(PIN) torch==2.13.0
	$(PIP) install $(PIN) -e ".[dev]"
	$(PYTHON) -c "import torch, moderngl, av, smplx, soxr, soundfile, yaml, espeakng_loader; print('avitalk setup ok: torch', torch.__version__)"

# Offscreen rendering needs an EGL driver (Mesa's llvmpipe on CPU machines). Debian images usually have it;
# install it when it is missing and we are allowed to.
system-deps:
	@if ! $(PYTHON) -c "import ctypes; ctypes.CDLL('libEGL.so.1')" >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libgl1; \
	  else echo "warning: libEGL.so.1 not found; install libegl1 + libegl-mesa0 + libgl1-mesa-dri for rendering"; fi; \
	fi

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

bench:
	$(PYTHON) -m benchmarks.run

demo:
	$(PYTHON) -m avitalk.cli head --out out/demo/head
	$(PYTHON) scripts/foundation_demo.py out/demo

clean:
	rm -rf out build dist *.egg-info .pytest_cache
