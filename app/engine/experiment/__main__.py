"""`python -m app.engine.experiment`: the experiment's command line (app/engine/experiment/cli.py)."""
from app.engine.experiment.cli import main

if __name__ == "__main__":
    main()
