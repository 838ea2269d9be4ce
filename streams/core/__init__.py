"""The pure core: events, journeys, leaks, surveys and guardrails, follow-ups, health. No I/O."""
