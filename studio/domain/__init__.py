"""Pure rules of Mini Studio: no I/O, no SDK imports."""
