"""Step times from measured kernel tables: file format (op_table), per-rank shapes, interpolation,
kernel pricers, host overhead, the step model, and which file a scenario uses (resolve)."""
