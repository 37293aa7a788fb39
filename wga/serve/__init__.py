"""The render service: queue → api → gateway.

:mod:`wga.serve.scheduler` decides what renders next (thread-free), :mod:`wga.serve.jobs` holds
the jobs and their JSON, :mod:`wga.serve.cache` the render store (:mod:`wga.vis.store`) with the
live jobs' state files and a byte cap, :mod:`wga.serve.queue` runs it all in worker threads;
:mod:`wga.serve.api` maps REST requests onto it (request shapes in :mod:`wga.serve.http`, models
loading in :mod:`wga.serve.loading`), :mod:`wga.serve.gateway` runs it behind
jupyter_kernel_gateway with the explorer page, guarded by :mod:`wga.serve.guard`.
"""
