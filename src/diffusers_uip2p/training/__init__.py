"""Training: UIP2P with the Edit Reversibility Constraint (`train_uip2p`, `erc`, `losses`), its data tools
(`data`, `shards`, `reverse_rules`, `instructions`, `clip_filter`, `prepare_data`) and the task classifier."""
