"""Research: the Uroboros meta-loop over evaluation windows and the JSONL log of research cycles."""
