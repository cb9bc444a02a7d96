"""The Python APIs: ``Sender`` for an encoder process, ``Receiver`` for a language side."""
