"""Connection hosts: the child processes that hold a worker's WhatsApp clients.

The worker process never loads a WhatsApp library. It keeps the leases, the
fences and the state writes; each connection host (``child.py``) only opens and
closes clients on the worker's orders and streams their events back. The
process boundary is the fence: a host that cannot confirm a close is killed,
a host exits by itself when its worker stops renewing, and a host dies with
its worker. ``pool.HostPool`` is the worker's side, and is what the worker's
``SessionHost`` sees as its ``WhatsAppBackend``.
"""
