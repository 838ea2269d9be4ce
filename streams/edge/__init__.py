"""Where data enters and leaves: collector, producer helper, replay, dispatcher."""
