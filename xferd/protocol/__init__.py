"""What crosses the wire and the arithmetic of a round: the ZMQ frames (``wire``), room
status values (``status``), the buffer layout (``layout``) and block planning
(``planning``). Pure: no Redis, no sockets."""
