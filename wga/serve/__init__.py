"""The render service: queue → api → gateway.

:mod:`wga.serve.queue` renders jobs in worker threads (priority, pre-emption, batching, cache),
:mod:`wga.serve.api` maps REST requests onto it, :mod:`wga.serve.gateway` runs it all behind
jupyter_kernel_gateway with the explorer page.
"""
