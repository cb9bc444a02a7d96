"""The data plane: the Mooncake Transfer Engine (``engine``) and the block pools in shared
memory it writes from and into (``pool``)."""
