"""The sender's pure core: ledger states, delivery outcomes, consent checks, rate limits."""
