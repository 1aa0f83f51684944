"""``python -m benchmarks.peers`` (from the repository root)."""

from .run_peers import main

raise SystemExit(main())
