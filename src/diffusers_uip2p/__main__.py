"""``python -m diffusers_uip2p``: the same command line as ``diffusers-uip2p``."""

from .cli import main

raise SystemExit(main())
