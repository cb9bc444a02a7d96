"""The tooling around the product: the demo and its simulated peers, the benchmarks, the
chaos runs, local Redis set-ups. A node needs none of it to serve (`pip install
'xferd[cpu]'`); `xferd demo` and `xferd bench` need the `demo` and `bench` extras."""
