"""`courierwatch discover`: the Apple names a site's devices really ask for, and what is blocked."""
