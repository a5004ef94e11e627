"""``python -m service.footage VIDEO --camera-id ID [...]``: see `service.footage.cli`."""

from service.footage.cli import main

raise SystemExit(main())
