"""The actors of a run: master, worker, heartbeat monitor and canceller."""
