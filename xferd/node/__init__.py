"""The processes of an embedding node: ``serve`` supervises the ingress, the workers and the
janitor; ``fencer``, ``stopping`` and ``lease`` keep a stopped writer from ever writing
late; ``notify`` pushes statuses to the language side; ``bootstrap`` speaks the reference's
HTTP route protocol."""
