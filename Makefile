# The two commands a user needs are `make run` and `make test`; everything else is a step of theirs.
# While working: `make test-fast` (no subprocess, under a minute), `make lint`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: lean-ffmpeg test-lean-ffmpeg run test test-fast test-containers test-network test-cluster lint bench bench-capacity bench-failover soak setup system-deps test-system-deps clean

# Debian and Ubuntu ship `venv` separately (python3-venv): install it when creating the venv fails.
$(PY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); bash scripts/system-deps.sh venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(TEST_STAMP) $(RUN_STAMP)

setup: $(RUN_STAMP) system-deps

system-deps:
	@bash scripts/system-deps.sh run

test-system-deps:
	@bash scripts/system-deps.sh test

# The pushes run on `make lean-ffmpeg`'s build once it is there (RELAY_PUSH_FFMPEG, when set, wins).
# LEAN_FFMPEG_VERSION=5.1.8 (for lean-ffmpeg, run and test-lean-ffmpeg alike): bookworm's ffmpeg, measured
# beside 7.1.3 and not the default (scripts/lean-ffmpeg.sh says why).
LEAN_FFMPEG_VERSION ?= 7.1.3
LEAN_FFMPEG := build/lean-ffmpeg/$(LEAN_FFMPEG_VERSION)/bin/ffmpeg
run: setup
	RELAY_PUSH_FFMPEG="$${RELAY_PUSH_FFMPEG:-$(if $(wildcard $(LEAN_FFMPEG)),$(abspath $(LEAN_FFMPEG)))}" \
		$(PY) -m api serve --announce --show-secrets --self-signed-tls

# An ffmpeg with only what a push needs: half the memory per destination (scripts/lean-ffmpeg.sh, 2-4 min).
lean-ffmpeg: $(RUN_STAMP)
	@bash scripts/system-deps.sh lean
	FULL_FFMPEG="$$($(PY) -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" \
		LEAN_FFMPEG_VERSION=$(LEAN_FFMPEG_VERSION) bash scripts/lean-ffmpeg.sh

# The pushes' tests with every push on the lean build (and everything else on the full one). Deselected:
# the HEVC case of a test that also runs a push *with* a video decoder, which the relay never does: ffmpeg
# 7.1's HEVC decoder drops matrixCoefficients from the enhanced-FLV colorInfo (the relay's own probe, without
# a decoder, writes the same bytes as the full 9.0 build but for the Lavf version string). 5.1.8 fails it
# for any probe: it has no enhanced FLV.
test-lean-ffmpeg: $(TEST_STAMP) system-deps test-system-deps lean-ffmpeg
	IMAGEIO_FFMPEG_EXE=$(abspath $(LEAN_FFMPEG))-pushes-only \
		$(VENV)/bin/pytest -q -p no:cacheprovider tests/push tests/supervisor tests/e2e \
		--deselect "tests/push/test_probe.py::test_probing_without_a_video_decoder_changes_no_byte[HEVC (enhanced RTMP)]"

CODE := relay api tests bench

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/mypy

# The tests that start no process (tests/conftest.py fails one that does without the `integration` marker);
# system-deps: without libsrt the API gives no SRT URLs, and the tests that expect them fail.
test-fast: $(TEST_STAMP) system-deps
	$(VENV)/bin/pytest -q -p no:cacheprovider -m "not integration" tests

# Faults on real impaired links (network namespaces, veth, tc tbf); needs root, skips saying why otherwise.
test-network: $(TEST_STAMP) system-deps test-system-deps
	$(VENV)/bin/pytest -q -p no:cacheprovider -m network tests/network

# The five-minute soak (tests/soak/test_soak.py) spends its time waiting on a light load (4 x 2 streams at
# 300 kbit/s): it runs beside the rest of the suite in a pytest of its own, which takes ~4.5 minutes off
# `make test`; its output follows the rest's, and `make test` fails when either fails.
SOAK_TEST := tests/soak/test_soak.py
test: $(TEST_STAMP) system-deps test-system-deps lint
	@mkdir -p build; \
	$(VENV)/bin/pytest -q -p no:cacheprovider $(SOAK_TEST) > build/soak-beside.log 2>&1 & soak=$$!; \
	trap 'kill $$soak 2>/dev/null' INT TERM; \
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=25 --deselect $(SOAK_TEST) tests; rest=$$?; \
	wait $$soak; soaked=$$?; \
	echo "== $(SOAK_TEST), run beside the rest (exit status $$soaked):"; cat build/soak-beside.log; \
	exit $$(( rest != 0 || soaked != 0 ))

# Three relay nodes on PostgreSQL behind HAProxy and nginx (tests/cluster; part of `make test` too, skipped
# with the reason where PostgreSQL, HAProxy or nginx's stream module is missing).
test-cluster: $(TEST_STAMP) system-deps test-system-deps
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/cluster

# The image and the compose file, built and run with a podman of the test's own (tests/containers; also
# part of `make test`, skipped with the reason where podman cannot run).
test-containers: $(TEST_STAMP) system-deps test-system-deps
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/containers

bench: $(TEST_STAMP) system-deps test-system-deps
	@bash scripts/system-deps.sh bench
	$(PY) -m bench.relay_bench $(BENCH_ARGS)

# How much one node carries: streams x destinations raised step by step, the relay and nginx-rtmp's `push` in
# the same run, until a limit; the curve and the knee in bench-results/capacity/ (CAPACITY_ARGS="--help").
bench-capacity: $(TEST_STAMP) system-deps test-system-deps
	@bash scripts/system-deps.sh bench
	$(PY) -m bench.capacity $(CAPACITY_ARGS)

# Hours of 8 streams x 4 destinations with churn (destinations killed, publishers dropped, API writes),
# sampled every minute; verdicts and the report in bench-results/soak/ (SOAK_ARGS="--help"). A five-minute
# version runs in `make test` (tests/soak).
SOAK_HOURS ?= 2
soak: $(TEST_STAMP) system-deps test-system-deps
	$(PY) -m bench.soak --hours $(SOAK_HOURS) $(SOAK_ARGS)

# Three nodes on PostgreSQL behind HAProxy: kill -9 of a stream's owner -> first packet at the destinations
# (bench/failover.py; FAILOVER_ARGS="--help").
bench-failover: $(TEST_STAMP) system-deps test-system-deps
	$(PY) -m bench.failover $(FAILOVER_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
