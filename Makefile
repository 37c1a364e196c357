# avitalk — two commands on a fresh machine: `make setup`, then `make test`.
# Everything installs into the current Python interpreter (set PYTHON=... to use another, e.g. a venv's).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PIN := -c constraints.txt

.PHONY: setup system-deps test test-fast bench bench-live bench-gpu demo demo-checkpoint real-folds voice-folds \
	track-truth tracker-refined clean

setup: system-deps
	$(PIP) install $(PIN) torch==2.13.0
	$(PIP) install $(PIN) -e ".[dev,app]"
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix build/web --no-audit --no-fund --silent three@0.170.0 \
	    || echo "warning: could not install three.js; the glTF browser test will be skipped"; \
	else echo "warning: npm not found; the glTF browser test (three.js) will be skipped"; fi
	$(PYTHON) -m avitalk data track --install
	$(PYTHON) -c "import torch, moderngl, av, smplx, soxr, soundfile, yaml, espeakng_loader, ai_edge_litert; print('avitalk setup ok: torch', torch.__version__)"

# Offscreen rendering needs an EGL driver (Mesa's llvmpipe on CPU machines); the web app's browser test drives
# headless Chromium. Debian images usually lack the latter: install what is missing when apt and root allow it.
system-deps:
	@if ! $(PYTHON) -c "import ctypes; ctypes.CDLL('libEGL.so.1')" >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libgl1; \
	  else echo "warning: libEGL.so.1 not found; install libegl1 + libegl-mesa0 + libgl1-mesa-dri for rendering"; fi; \
	fi
	@if ! command -v chromedriver >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "warning: chromedriver not found; install chromium + chromium-driver to run the browser test"; fi; \
	fi
	@if ! command -v Xvfb >/dev/null 2>&1 && [ -z "$$DISPLAY" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb) \
	      || echo "warning: could not install xvfb; the live window test will be skipped"; \
	  else echo "warning: no display and no Xvfb; the live window test will be skipped"; fi; \
	fi

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

bench:
	$(PYTHON) -m benchmarks.run

# Only `avitalk live` at real time: latency per look-ahead, and a 10-minute stream (benchmarks/results/live.json)
bench-live:
	$(PYTHON) -m benchmarks.run live

# On a GPU machine (the CPU when there is none): equivalence with the CPU, latency, training step rates, peak memory.
bench-gpu:
	$(PYTHON) -m benchmarks.gpu

# The main job on the embedded default checkpoint: a SynthTalk voice says a sentence (made here, offline), then
# `avitalk run` writes the instruction, the FLAME motion and the video to out/demo/run/.
DEMO_TEXT := "I finally got the letter this morning, and we are all going to the seaside together next week."
demo:
	$(PYTHON) -m avitalk data say $(DEMO_TEXT) -o out/demo/speech.wav --emotion happy --intensity 3 --overwrite
	$(PYTHON) -m avitalk run out/demo/speech.wav -o out/demo/run --overwrite
	@echo "edit out/demo/run/instruction.txt, then: avitalk run out/demo/speech.wav -o out/demo/edited --instruction-file out/demo/run/instruction.txt"

# Rebuild the embedded default checkpoint from scratch (SynthTalk corpus, both stages, measurements, model card):
# about 75 minutes on 2 CPU cores with GRID (72 timed as one run before stage 1 stopped fitting a reader the build
# replaces, docs/measurements.md; read speech's lips add about 9, docs/real-faces.md); resumes after an interruption
# (work in build/demo-checkpoint).
# GRID=folder (GRID_FITS=its fits): real faces in stage 2's lip-sync pretraining (docs/real-faces.md).
GRID ?=
GRID_FITS ?=
demo-checkpoint:
	$(PYTHON) scripts/build_default_checkpoint.py --work build/demo-checkpoint $(if $(GRID),--grid $(GRID)) $(if $(GRID_FITS),--grid-fits $(GRID_FITS))

# Stage 1 on real voices, speaker-independently: 3 leave-actors-out folds over RAVDESS (needs ../shared/data and the
# corpus of `make demo-checkpoint`); about 30 minutes on 2 cores per fold.
REAL ?= ../shared/data/ravdess-speech-16k
real-folds:
	$(PYTHON) -m avitalk data ravdess $(REAL) -o build/real/ravdess --test-actors none --val-actors none
	$(PYTHON) scripts/real_speech_folds.py --synth build/demo-checkpoint/data --real build/real/ravdess --folds 3 --synth-val

# The emotion reader on leave-speakers-out folds over SynthTalk, RAVDESS and plain read speech (needs ../shared/data):
# statistics of every clip (about 25 minutes on 2 cores the first time, cached), then the folds (about a minute).
# Writes build/voice-folds/ (summary.json, reliability.png, coverage.png) and prints the table.
READ ?= ../shared/data/librispeech-neutral-16k
voice-folds:
	test -f build/voices/synth/manifest.jsonl || $(PYTHON) -m avitalk data synth -o build/voices/synth -n 2000 --seed 0 -q
	test -f build/voices/ravdess/manifest.jsonl || $(PYTHON) -m avitalk data ravdess $(REAL) -o build/voices/ravdess --test-actors none --val-actors none
	test -f build/voices/librispeech/manifest.jsonl || $(PYTHON) -m avitalk data speech $(READ) -o build/voices/librispeech --source librispeech
	$(PYTHON) scripts/voice_folds.py --synth build/voices/synth --real build/voices/ravdess build/voices/librispeech --variants acted read

# The face tracker + fit on rendered SynthTalk (known coefficients): 24 clips rendered to mp4, tracked like anyone's
# video, compared with the truth; about 3 minutes on 2 cores. Writes build/track-truth/ (summary.json, side_by_side.png).
# LANDMARKS=refined: MediaPipe's face mesh with refined lips (after `make tracker-refined`)
LANDMARKS ?= mesh
track-truth:
	$(PYTHON) scripts/track_truth.py --clips 24 --work build/track-truth --landmarks $(LANDMARKS)

# The refined tracker (`avitalk data track --landmarks refined`): mediapipe 0.10.21 in an environment of its own
# (~/.cache/avitalk/tracker/mediapipe-env, about 1 GB, a minute; it pins numpy < 2 and pulls jax and OpenCV)
tracker-refined:
	$(PYTHON) -m avitalk data track --install-refined

clean:
	rm -rf out build dist *.egg-info .pytest_cache
