"""Cluster mode: several Kilowatt processes sharing one database and one Redis.

Each process is a *node* with a unique id (``node_id``). A charge point's socket lives
on exactly one node; everything else is shared:

* **Presence** (:mod:`kilowatt.cluster.presence`): the node holding a charge point's
  socket keeps a Redis key ``…:cp:{id}`` naming it, with a TTL (``presence_ttl``)
  renewed every ttl/3 while the socket is open. A node that dies loses its keys
  within the TTL; the charge points reconnect to another node, which claims them.
* **Commands** (:mod:`kilowatt.bus.redis`): an API call for a charge point held by
  another node is published on that node's channel, run there, and its answer (or
  the very exception the local path would raise) comes back on the caller's
  channel. A charge point on this node never touches Redis.
* **Duplicate connections**: claiming a charge point returns the previous holder;
  when that is another node, it is told to close its (older) connection.
* **Events** (:mod:`kilowatt.bus.redis_events`): every node's events reach every
  node's subscribers (SSE, dashboard) through one Redis channel.
* **Connection state** in the database is reconciled against presence
  (:class:`kilowatt.cluster.node.ClusterNode`): a node never clears the state of
  charge points another node holds.

:mod:`kilowatt.workers` runs several nodes on one machine on one port.
"""

from __future__ import annotations

__all__ = ["ClusterUnavailable"]


class ClusterUnavailable(RuntimeError):
    """The cluster's Redis cannot be reached at start-up (the message says where)."""
