PYTHON ?= python3
PYTEST = $(PYTHON) -m pytest
KFAC_REPRO ?= kfac-repro
RESULTS ?= results

.PHONY: install data test test-slow test-keras-next lint bench bench-arms bench-gpu reproduce-cpu reproduce-fig2-cpu figures report

install:  ## install the package, its pinned dependencies, the dev tools and the tests' real data (Fashion-MNIST)
	$(PYTHON) -m pip install -e ".[dev]"
	$(MAKE) data

data:  ## Fashion-MNIST into the data root ($$KFAC_REPRO_DATA or ~/.kfac_repro/data) unless already found
	$(PYTHON) -m cli data download fashion_mnist || echo "warning: Fashion-MNIST not installed (needs apt-get);" \
		"the tests that train on it will be skipped"

test:  ## the default test run, in 2 processes (pytest-xdist; under 10 minutes on 2 cores)
	$(PYTEST) -n 2 -m "not slow" -q --durations=10

test-slow:  ## long tests: real-data training, multi-process runs
	$(PYTEST) -m slow -q

KERAS_TESTS = tests/test_keras_*.py tests/test_front_ends_agree.py
test-keras-next:  ## the Keras front end's tests (not slow) against the newest Keras on the package index, in a throwaway venv
	@venv=$$(mktemp -d) && trap 'rm -rf "$$venv"' EXIT && \
	$(PYTHON) -m venv --system-site-packages "$$venv" && \
	"$$venv/bin/python" -m pip install --quiet --upgrade keras && \
	"$$venv/bin/python" -c "import keras; print('testing with Keras', keras.__version__)" && \
	"$$venv/bin/python" -m pytest -m "not slow" -q -p no:cacheprovider $(KERAS_TESTS)

lint:  ## ruff and mypy over the library and the CLI
	$(PYTHON) -m ruff check kfac_repro cli.py tests
	$(PYTHON) -m mypy

bench:  ## step-time benchmark of the paper's CIFAR-10 net (prints ratios to an SGD step)
	kfac-repro bench step --model cifar10 --batch-size 512

bench-arms:  ## every arm's cost per update, each experiment's cpu profile (on an idle machine), read by the report
	for spec in $$($(KFAC_REPRO) list --names); do \
		$(KFAC_REPRO) bench arms $$spec --profile cpu --out $(RESULTS) || exit 1; \
	done

bench-gpu:  ## the paper profile's costs on the device found (a GPU), into results/gpu/<time>-full.csv; under 8 minutes
	$(KFAC_REPRO) bench gpu

reproduce-fig2-cpu:  ## Fig. 2's cpu profile: the grids its spec names, then every arm with each seed; resumable
	$(KFAC_REPRO) reproduce --profile cpu --only cifar10-async --out $(RESULTS)

reproduce-cpu:  ## every spec's cpu profile (grids, then each arm × seed) into results/, resumable, with an ETA
	$(KFAC_REPRO) reproduce --profile cpu --out $(RESULTS)

figures:  ## Figures 2-8 from the CSVs under results/ into plots/ (PNG and PDF); no training
	kfac-repro plot all

report:  ## the reproduction report, docs/reproduction-report.md
	kfac-repro report
