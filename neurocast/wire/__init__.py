"""What travels between the service and its clients.

Request, response and WebSocket message models (:mod:`neurocast.wire.schemas`), binary signal
frames (:mod:`neurocast.wire.frames`), JSON records of results (:mod:`neurocast.wire.records`)
and result tables (:mod:`neurocast.wire.tables`). The server and the Python client both import
them from here, so a client needs nothing of the server.
"""
