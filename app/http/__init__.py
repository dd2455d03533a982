"""HTTP plumbing: the ASGI middleware base, the body guard, security headers and error mapping, auth and rate
limits, static assets."""
