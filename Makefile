PYTHON ?= python3
PYTEST = $(PYTHON) -m pytest
KFAC_REPRO ?= kfac-repro
RESULTS ?= results
FIG2_ARMS = sync-gpu1 async-gpu1 sgd-bn sync-gpu4 async-gpu4
RUN_ID ?= rerun

.PHONY: install data test test-slow lint bench bench-arms reproduce-cpu reproduce-fig2-cpu figures report

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

bench-arms:  ## every arm's cost per update for Fig. 2's cpu profile (on an idle machine), read by the report
	$(KFAC_REPRO) bench arms cifar10-async --profile cpu --out $(RESULTS)

reproduce-fig2-cpu:  ## Fig. 2's cpu profile: both opponents' 10-setting grids (1 seed each), then 3 seeds of every arm; resumable
	for arm in sgd-bn sync-gpu1; do $(KFAC_REPRO) grid cifar10-async --arm $$arm --profile cpu --parallel 2 \
		--set training.seeds=1 --out $(RESULTS) || exit 1; done
	for seed in 0 1 2; do for arm in $(FIG2_ARMS); do \
		$(KFAC_REPRO) run cifar10-async --profile cpu --arm $$arm --seeds $$seed --run-id $(RUN_ID) \
			$$([ -d "$$($(PYTHON) -m kfac_repro.runner.layout run-dir $(RESULTS) cifar10-async cpu $$arm $(RUN_ID) \
				$$seed)" ] && echo --resume) \
			--out $(RESULTS) $$([ $$arm = sgd-bn ] && echo --tuned) || exit 1; done; done

reproduce-cpu:  ## rerun every experiment's cpu profile into results/ (hours on 2 cores)
	for spec in $$(ls experiments/*.yaml | xargs -n1 basename | sed 's/\.yaml$$//'); do \
		kfac-repro run $$spec --profile cpu || exit 1; done
	kfac-repro grid cifar10-async --arm sgd-bn --profile cpu --parallel 2
	kfac-repro run cifar10-async --arm sgd-bn --profile cpu --tuned

figures:  ## Figures 2-8 from the CSVs under results/ into plots/ (PNG and PDF); no training
	kfac-repro plot all

report:  ## the reproduction report, docs/reproduction-report.md
	kfac-repro report --allow-mixed  # older figures mix commits; each says so
