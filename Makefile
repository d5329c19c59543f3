PYTHON ?= python3
PYTEST = $(PYTHON) -m pytest

.PHONY: install data test test-slow lint bench reproduce-cpu figures report

install:  ## install the package, its pinned dependencies, the dev tools and the tests' real data (Fashion-MNIST)
	$(PYTHON) -m pip install -e ".[dev]"
	$(MAKE) data

data:  ## Fashion-MNIST into the data root ($$KFAC_REPRO_DATA or ~/.kfac_repro/data) unless already found
	$(PYTHON) -m cli data download fashion_mnist || echo "warning: Fashion-MNIST not installed (needs apt-get);" \
		"the tests that train on it will be skipped"

test:  ## the default test run (under 10 minutes on 2 cores)
	$(PYTEST) -m "not slow" -q

test-slow:  ## long tests: real-data training, multi-process runs
	$(PYTEST) -m slow -q

lint:  ## ruff and mypy over the library and the CLI
	$(PYTHON) -m ruff check kfac_repro cli.py tests
	$(PYTHON) -m mypy

bench:  ## step-time benchmark of the paper's CIFAR-10 net (prints ratios to an SGD step)
	kfac-repro bench step --model cifar10 --batch-size 512

reproduce-cpu:  ## rerun every experiment's cpu profile into results/ (hours on 2 cores)
	for spec in $$(ls experiments/*.yaml | xargs -n1 basename | sed 's/\.yaml$$//'); do \
		kfac-repro run $$spec --profile cpu || exit 1; done
	kfac-repro grid cifar10-async --arm sgd-bn --profile cpu --parallel 2
	kfac-repro run cifar10-async --arm sgd-bn --profile cpu --tuned

figures:  ## Figures 2-8 from the CSVs under results/ into plots/ (PNG and PDF); no training
	kfac-repro plot all

report:  ## the reproduction report, docs/reproduction-report.md
	kfac-repro report
