"""The operator console: the fleet projection, module lists and firmware roll-outs (issue 14)."""
