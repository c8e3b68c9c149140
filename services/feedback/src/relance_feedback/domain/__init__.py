"""The pure core of the feedback service: answers, stats, alert payloads, delivery policy."""
