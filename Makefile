# make demo: set up .venv and run the main job on built-in real data.
# make test: set up .venv and run the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c requirements/constraints.txt "torch==2.13.0"
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e ".[dev,parquet,postgres,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/netrace data inspect examples/sp500_vol.toml
	mkdir -p runs && rm -rf runs/demo.db runs/demo.db-wal runs/demo.db-shm runs/demo.db-states
	$(BIN)/netrace run examples/sp500_vol.toml --storage runs/demo.db
	$(BIN)/netrace evaluate sp500_vol --storage runs/demo.db
	$(BIN)/netrace report sp500_vol --storage runs/demo.db --out runs/demo_report.html
	$(BIN)/python -c "from netrace.data import load_source; load_source('sp500').to_csv('runs/sp500.csv', index=False)"
	$(BIN)/netrace predict sp500_vol --storage runs/demo.db --data runs/sp500.csv --out runs/demo_forecasts.csv
	@echo
	@echo "The report:    runs/demo_report.html (open it in a browser; it needs no network)"
	@echo "The forecasts: runs/demo_forecasts.csv (the last row: the day after the data)"
	@echo "Next:"
	@echo "  .venv/bin/netrace status sp500_vol --storage runs/demo.db      the best networks"
	@echo "  .venv/bin/netrace evaluate sp500_vol --storage runs/demo.db    the stored verdict again"
	@echo "  .venv/bin/netrace predict sp500_vol --storage runs/demo.db --data NEW.csv --out f.csv"
	@echo "                                                                 forecasts from new rows"
	@echo "  Your own data: copy examples/sp500_vol.toml, set [data] path and time, then run,"
	@echo "  evaluate, report and predict as above (README: 'Quick start'; docs/)."

test: $(STAMP)
	$(BIN)/python -m pytest -q

lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^torch==' > requirements/constraints.txt.new
	echo "torch==2.13.0" >> requirements/constraints.txt.new
	mv requirements/constraints.txt.new requirements/constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
