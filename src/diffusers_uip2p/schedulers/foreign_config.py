"""A diffusers scheduler built from another scheduler's config, given only the keys its constructor takes.

`from_config` keeps unknown keys in the saved config and warns about them on every load: a DSI config's
``auxiliary_position`` would follow an Euler-ancestral or DDIM scheduler made from it into every folder."""

from __future__ import annotations

import inspect


def scheduler_from_config(scheduler_class, config):
    accepted = inspect.signature(scheduler_class.__init__).parameters
    return scheduler_class.from_config({k: v for k, v in dict(config).items() if k in accepted})
