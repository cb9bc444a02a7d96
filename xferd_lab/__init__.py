"""The tooling around xferd, apart from the product: the demo and its simulated peers, the
benchmarks, the chaos runs and local Redis set-ups (embedded, Cluster, Sentinel). A node
needs none of it to serve (`pip install 'xferd[cpu]'`); `xferd demo` and `xferd bench`
import it on demand and need the `demo` and `bench` extras."""
