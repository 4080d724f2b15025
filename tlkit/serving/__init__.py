"""Serving a model over HTTP (``tlkit serve``; named `serving` so that it never shadows the API function
`tlkit.serve`): a FastAPI app that micro-batches concurrent requests, reads uploads in memory with
limits, and a page that shows predictions and Grad-CAM overlays with no network resource."""
