"""Serve the app on the tiny profile (random weights) for load runs: python bench/load/serve_tiny.py PORT"""
from __future__ import annotations

import sys
import tempfile

import uvicorn

from app.core.settings import Settings
from app.main import create_app

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    app = create_app(Settings(profile="tiny", store_url=f"sqlite:///{tempfile.mkdtemp()}/load.db"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
