"""``python -m afa`` (and ``torchrun --nproc_per_node=N -m afa train ...``)."""

from afa.cli.main import main

raise SystemExit(main())
