"""The trace: typed event payloads (`events`) and the ring that records them with their correlation (`ring`)."""
