# fleetsync — the commands the README promises. `make test` is what CI runs.
VENV    ?= .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install deps demo test lint typecheck layers unit fuzz integration docs faults soak e2e e2e-chart e2e-kind bench controlplane clean

install:            ## create the virtualenv and install fleetsync with its dev tools
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'

# The virtualenv, made once: `make demo` on a fresh clone installs first (`make install`
# always reinstalls).
$(BIN)/fleetsync:
	$(MAKE) --no-print-directory install

demo: $(BIN)/fleetsync  ## the quickstart: simulator + `fleetsync run` into SQLite (installs if needed)
	$(BIN)/fleetsync demo

lint:
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench

typecheck:
	$(BIN)/mypy

layers:
	$(BIN)/lint-imports

unit:
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration:
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# Every shell block of README.md, docs/README.md and examples/README.md, run as written.
docs:
	$(BIN)/pytest tests/docs $(PYTEST_ARGS)

# Hypothesis suites with a fixed seed: a bounded set here, many more in `make soak`.
fuzz:
	$(BIN)/pytest tests/fuzz $(PYTEST_ARGS)

faults:
	$(BIN)/pytest tests/faults $(PYTEST_ARGS)

soak:               ## long runs: 5,000 fuzz examples, 200 fault schedules, 30 min of schedules in the cluster (not in make test)
	FLEETSYNC_FUZZ_PROFILE=soak $(BIN)/pytest tests/fuzz --timeout 7200 $(PYTEST_ARGS)
	FLEETSYNC_FAULT_EXAMPLES=200 $(BIN)/pytest tests/faults --timeout 7200 $(PYTEST_ARGS)
	$(PY) -m bench.cluster_scale --soak --minutes 30 --output bench/results-soak.md

e2e:
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

# The operator suite again with the chart's own controller: `helm install` on the local
# control plane (the controller a pod of its Deployment), syncing into PostgreSQL, through the
# fixtures `make e2e-kind` uses.
e2e-chart:
	FLEETSYNC_E2E_OPERATOR=helm FLEETSYNC_E2E_SINK=postgres \
	  $(BIN)/pytest tests/e2e/test_operator.py $(PYTEST_ARGS)

# Every image is built locally (no registry): tests/e2e/kind/README.md. Needs Docker
# (run.sh starts dockerd if none answers, and stops it after), mmdebstrap and gcc.
# KIND_TESTS: the tests of tests/e2e/test_operator.py run on kind (what only a real kubelet,
# runtime and cluster DNS show, issue 18 item 3): 2,000 items over 4 shards reporting through
# the chart's Service by DNS name; a worker pod deleted mid-run (the kubelet's SIGTERM, exit
# 75) replaced and resuming; the controller pod killed twice; a pod the kubelet cannot start
# (CreateContainerConfigError); a namespace deleted under a running SyncJob (the kubelet
# terminating its pods). `make e2e-kind KIND_TESTS=` runs the whole file; PYTEST_ARGS narrows
# further (e.g. PYTEST_ARGS='-k sigterm').
KIND_TESTS ?= test_a_syncjob_syncs_every_item_and_shows_fresh_progress \
  test_a_worker_sent_sigterm_is_replaced_and_the_shard_resumes \
  test_the_controller_killed_twice_loses_nothing \
  test_a_pod_that_cannot_start_stalls_the_run_naming_the_secret \
  test_deleting_a_namespace_with_a_running_syncjob_completes
e2e-kind:           ## the e2e suite's kind tests and the examples on a kind cluster
	KIND_TESTS='$(KIND_TESTS)' PYTEST_ARGS='$(PYTEST_ARGS)' bash tests/e2e/kind/run.sh

# Everything the tests need, installed or reused: system packages (Debian), the virtualenv,
# the control plane and helm built from Go modules (cached in ~/.cache/fleetsync).
deps:
	bash tests/tools/system-deps.sh
	$(MAKE) --no-print-directory install
	$(MAKE) --no-print-directory controlplane

# Each phase is timed so slow ones show up in CI's log.
test: deps
	@for phase in lint typecheck layers unit fuzz integration docs faults e2e e2e-chart e2e-kind; do \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory $$phase || exit $$?; \
	  echo "== phase $$phase took $$(( $$(date +%s) - start ))s"; \
	done

controlplane:       ## build (or reuse) kube-apiserver, kube-controller-manager, etcd, kubectl, helm
	bash tests/e2e/controlplane/build.sh
	bash tests/tools/helm.sh
	bash tests/tools/health/build.sh

bench:              ## benchmarks; writes bench/results.md (not part of CI's pass/fail)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
