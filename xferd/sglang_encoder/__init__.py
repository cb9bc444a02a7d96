"""SGLang's encoder server (the fork's EPD embedding side) on an xferd node, unedited.

``xferd sglang-encoder -- python -m sglang.launch_server ... --disaggregation-mode encode``
is the switch (``launcher``). It puts ``boot/`` on PYTHONPATH, so every Python process the
command starts, SGLang's scheduler children included, runs ``boot/sitecustomize.py``, which
installs ``hook``: when SGLang imports its disaggregation modules, the encoder's classes are
swapped for xferd's:

- ``buffers``   MultimodalDataBuffers whose tensors are views of the node's source pool
- ``allocator`` ReqToMetadataBlockAllocator backed by the node's pool in Redis
- ``manager``   the encode mode's manager, sender and bootstrap server (get_kv_class)
- ``node``      the process's handle on the node they share (Sender, leases, statuses)

Without the switch nothing here is imported and SGLang runs as it ships.
"""
