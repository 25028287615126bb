"""Pipeline layer: ``run(cfg)`` as named stages (checks, setup, baseline, adapt, evaluate,
export), the objectives that train methods, external sites, the few-shot protocol."""
