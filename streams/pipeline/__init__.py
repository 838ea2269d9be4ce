"""The Faust shell: app, agents, worker, the metrics it records."""
