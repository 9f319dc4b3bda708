"""Live queries: reactive functions, who watches what, the scheduler and its workers."""
